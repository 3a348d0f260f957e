"""Unit tests of vk_fargate.devcluster."""
