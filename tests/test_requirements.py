"""Requirements of python packages (0/requirements.lock), checked at load
with PEP 440/508 semantics against the distributions really installed:
numpy's real version, and tiny distributions made here (a .dist-info
folder on sys.path, as pip installs one)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import neuropods_native
from neuropods.loader import load_neuropod
from neuropods.packagers import create_python_neuropod

SPEC = [{"name": "x", "dtype": "float32", "shape": (None,)}]


def _numpy_version():
    """numpy's release as ints, and the next major version."""
    release = [int(part) for part in np.__version__.split("+")[0].split(".")[:3] if part.isdigit()]
    return release, release[0] + 1


NUMPY = np.__version__
(MAJOR, MINOR, *_), NEXT_MAJOR = _numpy_version()

# Distributions installed for these tests: name -> (version, more METADATA lines).
DISTRIBUTIONS = {
    "tinytorch": ("2.13.0+cpu", []),
    "tinyrc": ("1.0rc1", []),
    "tinyextras": ("1.0", [
        "Provides-Extra: fast", "Provides-Extra: broken", "Requires-Dist: numpy",
        'Requires-Dist: numpy>=1; extra == "fast"', 'Requires-Dist: not-a-real-package-xyz; extra == "broken"',
    ]),
    "weirdver": ("not.a.version", []),
}


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Installs DISTRIBUTIONS as metadata-only distributions on sys.path."""
    site = tmp_path / "site"
    for name, (version, more) in DISTRIBUTIONS.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *more]
        (info / "METADATA").write_text("\n".join(metadata) + "\n")
    monkeypatch.syspath_prepend(str(site))


def package(tmp_path, requirements, name="req"):
    code = tmp_path / f"{name}_src" / "model"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("def get_model(data_root):\n    return lambda x: {'x': x}\n")
    path = tmp_path / name
    create_python_neuropod(
        path, name, data_paths=[], code_path_spec=[{"python_root": str(code.parent)}],
        entrypoint_package="model", entrypoint="get_model", input_spec=SPEC, output_spec=SPEC,
        requirements=requirements, package_as_zip=False,
    )
    return path


MET = [
    f"numpy=={NUMPY}",
    f"numpy>={NUMPY}",
    f"numpy<={NUMPY}",
    f"numpy>{MAJOR - 1}",
    f"numpy<{NEXT_MAJOR}",
    "numpy!=0.0.1",
    f"numpy~={MAJOR}.{MINOR}",
    f"numpy=={MAJOR}.*",
    f"numpy==={NUMPY}",
    f"numpy>=1,<{NEXT_MAJOR},!=0.0.1",
    "NumPy",  # names compare normalized
    "tinytorch==2.13.0",  # a local version (+cpu) meets the public one
    "tinytorch==2.13.0+cpu",
    "tinytorch~=2.13",
    "tinyrc>=0.9",  # a pre-release installed is what the package got
    "weirdver",  # a version that is not PEP 440 is fine when none is asked for
    'not-a-real-package-xyz==1.0; python_version < "3"',  # marker does not apply here
    'numpy; sys_platform == "' + sys.platform + '"',
    "tinyextras[fast]",
    "tinytorch @ https://example.com/tinytorch-2.13.0-py3-none-any.whl#sha256=00",
    f"numpy=={NUMPY}  # trailing comment",
]

UNMET = [
    (f"numpy>{NUMPY}", f"installed: {NUMPY}"),
    (f"numpy<{NUMPY}", f"installed: {NUMPY}"),
    (f"numpy!={NUMPY}", f"installed: {NUMPY}"),
    (f"numpy~={MAJOR}.{MINOR + 1}.0", f"installed: {NUMPY}"),
    (f"numpy=={NEXT_MAJOR}.*", f"installed: {NUMPY}"),
    (f"numpy>=1,<{MAJOR}", f"installed: {NUMPY}"),
    ("tinytorch==2.13.0+cu121", "installed: 2.13.0+cpu"),
    ("tinytorch<2.13.0", "installed: 2.13.0+cpu"),
    ("tinyrc>=1.0", "installed: 1.0rc1"),
    ("weirdver>=1", "installed: not.a.version, not a PEP 440 version"),
    ('not-a-real-package-xyz; sys_platform == "' + sys.platform + '"', "not installed"),
    ("tinyextras[broken]", "extra 'broken' needs not-a-real-package-xyz (not installed)"),
    ("not-a-real-package-xyz @ https://example.com/x.whl", "not installed"),
]


@pytest.mark.parametrize("line", MET)
def test_met_requirement_loads(tmp_path, installed, line):
    with load_neuropod(package(tmp_path, f"{line}\n")) as model:
        assert model.infer({"x": np.ones(2, np.float32)})["x"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("line, why", UNMET)
def test_unmet_requirement_is_named_with_what_is_installed(tmp_path, installed, line, why):
    path = package(tmp_path, f"# pinned\n{MET[0]}\n{line}\n")
    with pytest.raises(neuropods_native.RequirementsError) as info:
        load_neuropod(path)
    assert f"{line} ({why})" in str(info.value)
    assert MET[0] not in str(info.value)


def test_every_unmet_line_is_listed_at_once(tmp_path, installed):
    path = package(tmp_path, "".join(f"{line}\n" for line, _ in UNMET))
    with pytest.raises(neuropods_native.RequirementsError) as info:
        load_neuropod(path)
    for line, why in UNMET:
        assert f"{line} ({why})" in str(info.value)


@pytest.mark.parametrize(
    "line, fragment",
    [("numpy>=>1", "'numpy>=>1'"), ("numpy==1.0 extra words", "'numpy==1.0 extra words'"),
     ("-r other.txt", "'-r other.txt'"), ("numpy; python_version >", "'numpy; python_version >'")],
)
def test_malformed_line_is_refused_by_the_packager_with_its_number(tmp_path, line, fragment):
    with pytest.raises(neuropods_native.ConfigError) as info:
        package(tmp_path, f"numpy\n\n{line}\n")
    assert "0/requirements.lock: line 3: " + fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not (tmp_path / "req").exists()


def test_malformed_line_in_a_package_is_a_config_error_at_load(tmp_path):
    path = package(tmp_path, "numpy\n")
    (path / "0" / "requirements.lock").write_text("numpy\nnumpy>=>1\n")
    # The backend's config error crosses the backend ABI as one.
    with pytest.raises(neuropods_native.ConfigError,
                       match=r"0/requirements.lock: line 2: 'numpy>=>1'") as info:
        load_neuropod(path)
    assert isinstance(info.value, ValueError)


# ------------------------------------------- interpreters without packaging


@pytest.fixture
def bare_site(tmp_path):
    """A site folder holding only numpy and Neuropods (links to the installed
    ones), for an interpreter run with -S: no site-packages, so neither
    `packaging` nor pip is importable unless linked in."""
    site = tmp_path / "bare-site"
    site.mkdir()
    installed_site = os.path.dirname(os.path.dirname(np.__file__))
    for name in os.listdir(installed_site):
        if name.split("-")[0] in ("numpy", "numpy.libs", "neuropods", "neuropods_native"):
            os.symlink(os.path.join(installed_site, name), site / name)
    return site


def _load_bare(site, path):
    code = f"""
        import sys
        import neuropods_native
        try:
            neuropods_native.Neuropod({str(path)!r}).close()
        except neuropods_native.NeuropodError as e:
            print(type(e).__name__, e)
        else:
            print("loaded")
        print("packaging" in sys.modules, "pip._vendor.packaging.requirements" in sys.modules)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_without_packaging_or_pip_the_requirements_error_says_what_to_install(tmp_path, bare_site):
    path = package(tmp_path, "numpy\n")
    error, imported = _load_bare(bare_site, path)
    assert error.startswith("RequirementsError ")
    assert "packaging (not installed in " in error
    assert "pip install packaging" in error and "requirements.lock" in error
    assert imported == "False False"


def test_pip_vendored_packaging_is_the_fallback(tmp_path, bare_site):
    import pip

    os.symlink(os.path.dirname(pip.__file__), bare_site / "pip")
    met = package(tmp_path, f"numpy=={NUMPY.split('+')[0]}\n", name="met")
    unmet = package(tmp_path, f"numpy>{NUMPY}\n", name="unmet")
    assert _load_bare(bare_site, met) == ["loaded", "False True"]
    error, imported = _load_bare(bare_site, unmet)
    assert error == f"RequirementsError the model's requirements are not met by this Python environment: numpy>{NUMPY} (installed: {NUMPY})"
    assert imported == "False True"
