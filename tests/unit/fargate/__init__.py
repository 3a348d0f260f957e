"""Unit tests of vk_fargate.fargate."""
