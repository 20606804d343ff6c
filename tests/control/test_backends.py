"""The sbx backend keeps XLA's compiled programs on disk, where the user's setting says or in ours."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("sbx")

COMPILE_ONCE = """
import sys
if sys.argv[1] == "imported-first":
    import jax  # the backend must then set JAX's config instead of its environment
from aihf.control.backends import get_backend
get_backend("sbx")
import jax
import jax.numpy as jnp
print(float(jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).sum()))
"""


def _compile(tmp_path, mode, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    result = subprocess.run(
        [sys.executable, "-c", COMPILE_ONCE, mode],
        env=clean | {"XDG_CACHE_HOME": str(tmp_path / "xdg")} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "9.0"


@pytest.mark.parametrize(
    "mode",
    ["backend-first", pytest.param("imported-first", marks=pytest.mark.slow)],  # a JAX process each
)
def test_compiled_programs_land_in_our_cache_directory(tmp_path, mode):
    _compile(tmp_path, mode)
    assert any((tmp_path / "xdg" / "aihf" / "jax").iterdir())


def test_the_users_cache_directory_wins(tmp_path):
    _compile(tmp_path, "backend-first", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    assert any((tmp_path / "mine").iterdir())
    assert not (tmp_path / "xdg" / "aihf" / "jax").exists()
