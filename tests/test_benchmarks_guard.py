"""The regression guard's pieces: the export of another revision and the verdict table."""

import subprocess

import pytest

from benchmarks.guard import GuardLine, export_package, format_table


def test_export_package_writes_the_revision_tree(tmp_path):
    export_package("HEAD", tmp_path)
    head = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD", "probseq"],
                          capture_output=True, text=True, check=True).stdout.split()
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(head)


def test_export_package_refuses_an_unknown_revision(tmp_path):
    with pytest.raises(ValueError, match="cannot export probseq/ at 'no-such-rev'"):
        export_package("no-such-rev", tmp_path)


def test_verdicts_follow_the_threshold():
    lines = [GuardLine("slow", now=[2.2, 2.4, 2.3], then=[2.0, 1.9, 2.1]),
             GuardLine("same", now=[1.05], then=[1.0]),
             GuardLine("fast", now=[0.5], then=[1.0]),
             GuardLine("new only", now=[1.0])]
    assert lines[0].ratio == pytest.approx(2.3 / 2.0)
    table = format_table(lines, "abc123", threshold=0.10).splitlines()
    verdict = {row.split()[0]: row.split()[-1] for row in table[1:-1]}
    assert verdict == {"slow": "SLOWER", "same": "same", "fast": "faster", "new": "nan"}
