"""Unit tests of vk_fargate.aws."""
