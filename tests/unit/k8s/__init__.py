"""Unit tests of vk_fargate.k8s."""
