"""stjax.provenance: the commit and versions recorded next to every result."""
import os
import shutil
import subprocess

import pytest

from stjax import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv(provenance.COMMIT_VARIABLE, raising=False)
    path = tmp_path / "checkout"
    path.mkdir()
    _git(path, "init", "-q")
    (path / "code.py").write_text("x = 1\n")
    (path / "sub").mkdir()
    (path / "sub" / "more.py").write_text("y = 2\n")
    _git(path, "add", "code.py", "sub/more.py")
    _git(path, "commit", "-q", "-m", "first")
    return path


def test_commit_of_a_clean_checkout_then_dirty_only_for_tracked_changes(repo):
    head = _git(repo, "rev-parse", "--short=12", "HEAD")
    assert len(head) == 12 and provenance.code_commit(str(repo)) == head
    (repo / "untracked.txt").write_text("not part of the code")
    assert provenance.code_commit(str(repo)) == head
    (repo / "code.py").write_text("x = 2\n")
    assert provenance.code_commit(str(repo)) == head + "+dirty"
    _git(repo, "commit", "-q", "-am", "second")
    second = _git(repo, "rev-parse", "--short=12", "HEAD")
    assert second != head and provenance.code_commit(str(repo)) == second


def test_no_commit_outside_the_top_of_a_checkout_unless_named(repo, tmp_path, monkeypatch):
    # a copy installed inside some other repository must not report that repository's commit
    assert provenance.code_commit(str(repo / "sub")) is None
    plain = tmp_path / "plain"
    plain.mkdir()
    assert provenance.code_commit(str(plain)) is None
    monkeypatch.setenv(provenance.COMMIT_VARIABLE, "abc123")
    assert provenance.code_commit(str(plain)) == "abc123"
    assert provenance.code_commit(str(repo)) == _git(repo, "rev-parse", "--short=12", "HEAD")  # git wins


def test_describe_names_this_checkout_and_the_installed_versions():
    import jax

    described = provenance.describe()
    assert described["packages"]["jax"] == jax.__version__
    assert "not-a-package" not in provenance.describe(("jax", "not-a-package"))["packages"]
    if os.path.isdir(os.path.join(ROOT, ".git")):
        assert described["commit"].split("+")[0] == _git(ROOT, "rev-parse", "--short=12", "HEAD")
    line = provenance.one_line(described)
    assert line.startswith("stjax ") and f"jax {jax.__version__}" in line
    assert "commit unknown" in provenance.one_line(dict(described, commit=None))
