"""Unit tests of vk_fargate.fleet."""
