"""Unit tests of vk_fargate.kubelet."""
