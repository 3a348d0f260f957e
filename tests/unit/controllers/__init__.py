"""Unit tests of vk_fargate.controllers."""
