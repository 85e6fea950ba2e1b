"""Fixtures: a real docker-registry on 127.0.0.1 (plain and htpasswd)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from helpers.registry import Registry, TokenServer, make_registry, make_token_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if shutil.which("docker-registry") is None:
        pytest.skip("needs peer tool 'docker-registry' on PATH")
    reg = make_registry(tmp_path_factory.mktemp("registry"), htpasswd=False)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
        pytest.skip("needs peer tools 'docker-registry' and 'htpasswd' on PATH")
    reg = make_registry(tmp_path_factory.mktemp("authregistry"), htpasswd=True)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Registry, TokenServer]]:
    if shutil.which("docker-registry") is None or shutil.which("openssl") is None:
        pytest.skip("needs peer tools 'docker-registry' and 'openssl' on PATH")
    reg, tokens = make_token_registry(tmp_path_factory.mktemp("tokenregistry"))
    try:
        yield reg, tokens
    finally:
        reg.stop()
        tokens.stop()
