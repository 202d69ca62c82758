"""The code folders are `sfprompt.<name>` only; the stdlib `platform` stays intact."""

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_stdlib_platform_still_works_from_the_repository_root():
    done = _python("import platform; print(platform.system()); print(platform.__file__)")
    assert done.returncode == 0, done.stderr
    system, origin = done.stdout.split()
    assert system == "Linux" and not origin.startswith(str(ROOT))


def test_code_folders_import_as_subpackages():
    done = _python("import sfprompt.platform.config, sfprompt.results.tables, "
                   "sfprompt.platform.split; import sfprompt.platform as p; print(list(p.__path__))")
    assert done.returncode == 0, done.stderr
    assert str(ROOT / "platform") in done.stdout


def test_no_code_folder_has_an_init_file():
    for name in ("platform", "actors", "studies", "results"):
        assert (ROOT / name).is_dir() and not (ROOT / name / "__init__.py").exists()
    assert not (ROOT / "tests" / "platform").exists()


def test_platform_modules_never_import_ray():
    modules = [m.name for m in pkgutil.iter_modules([str(ROOT / "platform")])]
    code = ("import sys\n" + "".join(f"import sfprompt.platform.{m}\n" for m in modules)
            + "print('ray' in sys.modules)")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert len(modules) >= 10
    importlib.import_module("sfprompt.platform.config")
