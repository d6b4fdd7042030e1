"""Trust: packaged pins run; anything else needs its content id trusted, and asks again on change."""
from __future__ import annotations

import pytest

from microtvm_registry.registry import extra_indexes
from microtvm_registry.errors import TrustError
from microtvm_registry.template_paths import get_template, get_template_for_run
from microtvm_registry.cache.trust import load_trusted, trust_file
from registry_support import git_version_table, make_template_repo, run_cli, template_table, write_index
from support.servers import make_repo, rev_parse


@pytest.fixture
def vendor(tmp_path):
    repo = tmp_path / "vendor"
    versions = make_template_repo(repo, ["1.0.0"])
    index_file = write_index(tmp_path / "v.toml", [template_table("vendor/board", [git_version_table(str(repo), versions["1.0.0"])])])
    extra_indexes.add_extra_index("vendor", str(index_file))
    return {"repo": repo, "versions": versions, "index": index_file}


def test_packaged_template_runs_without_asking():
    path = get_template_for_run("host")
    assert (path / "microtvm_api_server.py").is_file()
    assert not trust_file().exists()


def test_untrusted_template_is_refused_with_the_command_to_run(vendor):
    with pytest.raises(TrustError) as info:
        get_template_for_run("vendor/board")
    message = str(info.value)
    assert "`microtvm trust vendor/board@1.0.0`" in message and "--trust" in message
    assert vendor["versions"]["1.0.0"].tree in message  # names the content id it would run
    assert "\n" not in message
    # Fetching and printing the path is fine: only starting the server needs trust.
    assert get_template("vendor/board").is_dir()
    # --trust lets one run through without recording anything.
    assert get_template_for_run("vendor/board", trust=True).is_dir()
    assert load_trusted() == []


def test_trust_command_records_content_id_and_a_change_asks_again(vendor, tmp_path):
    proc = run_cli("trust", "vendor/board")
    assert proc.returncode == 0, proc.stderr
    tree = vendor["versions"]["1.0.0"].tree
    assert proc.stdout.strip() == f"trusted vendor/board 1.0.0 {tree}"
    assert [r.content_id for r in load_trusted()] == [tree]
    assert get_template_for_run("vendor/board").is_dir()
    assert run_cli("trust", "vendor/board").stdout.startswith("already trusted")
    # The vendor publishes 1.1.0 with different content: it must be trusted again.
    commit = make_repo(vendor["repo"], {"tmpl/microtvm_api_server.py": "print('new and different')\n"}, message="1.1")
    new = {"version": "1.1.0", "git": str(vendor["repo"]), "commit": commit, "subdir": "tmpl", "tree": rev_parse(vendor["repo"], f"{commit}:tmpl")}
    write_index(vendor["index"], [template_table("vendor/board", [git_version_table(str(vendor["repo"]), vendor["versions"]["1.0.0"]), new])])
    with pytest.raises(TrustError) as info:
        get_template_for_run("vendor/board")
    assert "changed since you trusted it" in str(info.value)
    assert "`microtvm trust vendor/board@1.1.0`" in str(info.value)
    # The old, trusted version still runs.
    assert get_template_for_run("vendor/board@1.0.0").is_dir()


def test_cli_trust_flag_is_offered_where_servers_start():
    proc = run_cli("info", "--help")
    assert proc.returncode == 0 and "--trust" in proc.stdout


def test_malformed_trust_file_names_file_and_key(vendor):
    path = trust_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('[[trusted]]\nname = "vendor/board"\ncontent_id = "nope"\n')
    with pytest.raises(TrustError) as info:
        get_template_for_run("vendor/board")
    assert str(info.value).startswith(f"{path}: trusted[0].content_id: expected 40 hex digits")
