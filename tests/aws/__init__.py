"""Tests against AWS APIs, served by one moto server per session (see conftest)."""
