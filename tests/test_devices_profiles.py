"""Device profiles: built-ins, user TOML files, validation, core pinning."""

from __future__ import annotations

import os

import pytest

from edgegolf.devices.profiles import BUILTIN, DeviceProfile, get_profile, load_profiles_toml, pinned
from edgegolf.errors import RecipeError


def test_builtin_profiles():
    assert set(BUILTIN) == {"cpu-1", "cpu-2", "cpu-4", "cpu-all"}
    assert get_profile("cpu-1").threads == 1 and get_profile("cpu-4").threads == 4
    everything = get_profile("cpu-all")
    assert everything.threads is None and everything.resolved_threads == os.cpu_count()
    assert all(p.kind == "cpu" and p.description for p in BUILTIN.values())


def test_unknown_profile_lists_known_names():
    with pytest.raises(RecipeError, match=r"'raspberry' is unknown; known profiles: cpu-1, cpu-2, cpu-4, cpu-all"):
        get_profile("raspberry")


def test_profiles_from_toml(tmp_path):
    path = tmp_path / "devices.toml"
    path.write_text('[profiles.pi-like]\nthreads = 1\ncores = [0]\ndescription = "one pinned core"\n'
                    '[profiles.wide]\nkind = "cpu"\n')
    profiles = load_profiles_toml(path)
    assert profiles["pi-like"] == DeviceProfile("pi-like", threads=1, cores=(0,), description="one pinned core")
    assert profiles["wide"].threads is None
    assert get_profile("pi-like", profiles).cores == (0,)
    assert get_profile("cpu-2", profiles).threads == 2


@pytest.mark.parametrize("body, words", [
    ("threads = 0", ["'threads'", "0", "positive integer"]),
    ('threads = "two"', ["'threads'", "'two'", "positive integer"]),
    ('kind = "gpu"', ["'kind'", "'gpu'", "cpu"]),
    ("cores = []", ["'cores'", "()", "distinct CPU ids"]),
    ("cores = [0, 0]", ["'cores'", "(0, 0)", "distinct CPU ids"]),
    ("speed = 3", ["unknown field 'speed'", "threads"]),
])
def test_bad_profile_field_is_named(tmp_path, body, words):
    path = tmp_path / "devices.toml"
    path.write_text(f"[profiles.mine]\n{body}\n")
    with pytest.raises(RecipeError) as info:
        load_profiles_toml(path)
    message = str(info.value)
    assert "\n" not in message and "'mine'" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("text, words", [
    ("[profiles.cpu-1]\nthreads = 3\n", ["shadows a built-in"]),
    ("threads = 1\n", ["top-level keys", "[profiles.<name>]"]),
    ("[profiles\n", ["not valid TOML"]),
    ("[profiles]\nmine = 3\n", ["'mine'", "a table of"]),
])
def test_bad_profile_file(tmp_path, text, words):
    path = tmp_path / "devices.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_profiles_toml(path)
    for word in words:
        assert word in str(info.value)


def test_missing_profile_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_profiles_toml(tmp_path / "nope.toml")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_pinning_applies_and_restores():
    before = os.sched_getaffinity(0)
    core = min(before)
    with pinned(DeviceProfile("one", threads=1, cores=(core,))):
        assert os.sched_getaffinity(0) == {core}
    assert os.sched_getaffinity(0) == before
    with pinned(get_profile("cpu-1")):  # no cores: nothing changes
        assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_pinning_to_absent_core_is_refused():
    before = os.sched_getaffinity(0)
    with pytest.raises(RecipeError, match=r"'cores' is \[4096\]; accepted: CPU ids"):
        with pinned(DeviceProfile("far", threads=1, cores=(4096,))):
            pass
    assert os.sched_getaffinity(0) == before


def test_ssh_urls_become_profiles():
    from edgegolf.devices.profiles import parse_ssh_url

    profile = get_profile("ssh://pi@edge-box.local:2222")
    assert profile.kind == "ssh" and profile.url == "ssh://pi@edge-box.local:2222" and profile.python == "python3"
    target = parse_ssh_url(profile.url)
    assert (target.user, target.host, target.port) == ("pi", "edge-box.local", 2222)
    assert parse_ssh_url("ssh://edge-box").port == 22 and parse_ssh_url("ssh://edge-box").user is None


@pytest.mark.parametrize("url, words", [
    ("ssh://pi@host:99999", "bad port"),
    ("ssh://pi:secret@host", "no path, password or query"),
    ("ssh://pi@host/some/path", "no path, password or query"),
    ("ssh://", "no path, password or query"),
])
def test_malformed_ssh_urls_are_refused(url, words):
    with pytest.raises(RecipeError, match=words) as info:
        get_profile(url)
    assert "accepted: ssh://user@host" in str(info.value)


def test_ssh_and_accelerator_profiles_from_toml(tmp_path):
    from edgegolf.devices.profiles import ACCELERATORS, all_profiles

    path = tmp_path / "devices.toml"
    path.write_text('[profiles.pi]\nkind = "ssh"\nurl = "ssh://pi@10.0.0.7"\npython = "/opt/venv/bin/python"\n'
                    'threads = 4\n')
    profiles = load_profiles_toml(path)
    assert profiles["pi"] == DeviceProfile("pi", kind="ssh", url="ssh://pi@10.0.0.7", python="/opt/venv/bin/python",
                                           threads=4)
    assert set(ACCELERATORS) == {"cuda", "tensorrt", "torch-cuda"}
    assert list(all_profiles(profiles))[-1] == "pi"
    bad = tmp_path / "bad.toml"
    bad.write_text('[profiles.pi]\nkind = "ssh"\n')
    with pytest.raises(RecipeError, match="url is None; accepted: ssh://"):
        load_profiles_toml(bad)
    bad.write_text('[profiles.cuda]\nkind = "cuda"\n')
    with pytest.raises(RecipeError, match="shadows a built-in profile"):
        load_profiles_toml(bad)
    with pytest.raises(RecipeError, match="'url' is set for kind 'cpu'"):
        DeviceProfile("x", url="ssh://a@b")
