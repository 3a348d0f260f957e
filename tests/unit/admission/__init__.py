"""Unit tests of vk_fargate.admission."""
