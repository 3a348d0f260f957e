"""Unit tests of vk_fargate.fleetd."""
