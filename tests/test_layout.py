"""The code folders are `sfprompt.<name>` only, the stdlib `platform` stays intact, and
imports run one way (docs/design.md, Architecture): no cycle anywhere, `platform` never
imports what builds on it, Ray is imported only in `actors/`, and inside `platform`
every room imports only rooms below it."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sfprompt.platform.model.cuda_pages import cuda_library_ranges, page_out_cuda_libraries

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("platform", "actors", "studies", "results", "sfprompt")
# What each top-level folder may import (besides itself).
MAY_IMPORT = {"platform": set(), "results": {"platform"}, "studies": {"platform", "results"},
              "actors": {"platform", "studies"}, "sfprompt": set(FOLDERS)}
# Rooms of platform, lowest first: a module imports only modules of its rank or below.
RANKS = [("platform.errors", "platform.registry", "platform.atomic", "platform.seeds"),
         ("platform.config.schema", "platform.config.dotted"),
         ("platform.data", "platform.model", "platform.wire"), ("platform.method",),
         ("platform.fed", "platform.sim", "platform.model.build"),
         ("platform.config.validate", "platform.config.load"), ("platform.loop",)]


def modules() -> dict[str, Path]:
    """Every module of the project: dotted name (without `sfprompt.`) -> file."""
    out = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name.removeprefix("sfprompt.") if folder == "sfprompt" else name] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            if not name.startswith("sfprompt"):
                continue
            name = name.removeprefix("sfprompt").lstrip(".") or "sfprompt"
            name = name if name in known else name.rpartition(".")[0]  # a name, not a module
            if name in known:
                found.add(name)
    return found


def rank(module: str) -> int:
    best = None
    for i, prefixes in enumerate(RANKS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module}: not in any room of RANKS"
    return best[0]


GRAPH = {name: imports(path, modules()) - {name} for name, path in modules().items()}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_stdlib_platform_still_works_from_the_repository_root():
    done = _python("import platform; print(platform.system()); print(platform.__file__)")
    assert done.returncode == 0, done.stderr
    system, origin = done.stdout.split()
    assert system == "Linux" and not origin.startswith(str(ROOT))


def test_code_folders_import_as_subpackages():
    done = _python("import sfprompt.platform.config.load, sfprompt.results.tables, "
                   "sfprompt.platform.model.split; import sfprompt.platform as p; "
                   "print(list(p.__path__))")
    assert done.returncode == 0, done.stderr
    assert str(ROOT / "platform") in done.stdout


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="a GPU machine keeps triton")
def test_without_a_gpu_triton_stays_unloaded_and_flops_are_still_counted():
    # timm (through torchvision's torch._dynamo) and FLOP counting would each load it.
    done = _python("import sys, sfprompt.actors.clients, torch\n"
                   "from collections import Counter\n"
                   "from sfprompt.platform.wire.flops import count_flops\n"
                   "total = Counter()\n"
                   "with count_flops(total, 'k'):\n"
                   "    torch.ones(3, 4) @ torch.ones(4, 5)\n"
                   "print(sys.modules['triton'], total['k'])")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", str(2 * 3 * 4 * 5)]
    assert "triton" not in done.stderr  # torch's warning that it cannot count its kernels


def test_cuda_library_mappings_are_picked_from_a_maps_text():
    maps = ("7f00-7f10 r--p 00000000 08:01 11 /v/site-packages/nvidia/cu13/lib/libcublasLt.so.13\n"
            "7f10-7f20 r-xp 00010000 08:01 11 /v/site-packages/nvidia/cu13/lib/libcublasLt.so.13\n"
            "7f20-7f30 r-xp 00000000 08:01 12 /v/site-packages/torch/lib/libtorch_cuda.so\n"
            "7f30-7f40 r-xp 00000000 08:01 13 /v/site-packages/torch/lib/libc10_cuda.so\n"
            "7f40-7f50 r-xp 00000000 08:01 14 /v/site-packages/torch/lib/libtorch_cpu.so\n"
            "7f50-7f60 r-xp 00000000 08:01 15 /usr/lib/x86_64-linux-gnu/libcurl.so.4\n"
            "7f60-7f70 rw-p 00000000 00:00 0 \n"
            "7f70-7f80 r--p 00000000 08:01 16 /data/nvidia/notes.txt\n")
    assert cuda_library_ranges(maps) == [(0x7f00, 0x7f10), (0x7f10, 0x7f20), (0x7f20, 0x7f30),
                                         (0x7f30, 0x7f40)]


@pytest.mark.skipif(Path("/dev/nvidiactl").exists() or sys.platform != "linux",
                    reason="a GPU machine keeps its CUDA libraries; /proc is Linux's")
def test_without_a_gpu_no_cuda_library_page_stays_private_and_torch_computes_the_same():
    page_out_cuda_libraries()  # this process's own, so the child's pages are its alone
    done = _python("import sfprompt, torch, json\n"
                   "from sfprompt.platform.model.cuda_pages import CUDA_LIBRARY, "
                   "page_out_cuda_libraries\n"
                   "def private_clean():\n"
                   "    kib, cuda = 0, False\n"
                   "    for line in open('/proc/self/smaps'):\n"
                   "        f = line.split()\n"
                   "        if not f[0].endswith(':'):\n"
                   "            cuda = len(f) > 5 and bool(CUDA_LIBRARY.search(f[-1]))\n"
                   "        elif cuda and f[0] == 'Private_Clean:':\n"
                   "            kib += int(f[1])\n"
                   "    return kib\n"
                   "x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))\n"
                   "before, y = private_clean(), x @ x\n"
                   "ranges = page_out_cuda_libraries()\n"
                   "print(json.dumps([before, private_clean(), ranges,"
                   " page_out_cuda_libraries(), torch.equal(x @ x, y)]))")
    assert done.returncode == 0, done.stderr
    before, after, ranges, again, same = json.loads(done.stdout)
    if not ranges:
        pytest.skip("this torch build loads no CUDA library")
    # KiB. Before: pages the child alone maps (a process still holding the CUDA
    # libraries' pages without having let them go would share, and shrink, them).
    assert before > 10 * 1024, "another process maps the CUDA libraries' pages"
    assert after < 1024  # the kernel reclaimed them
    assert again == 0 and same  # once per process; nothing torch computes changed


def test_no_code_folder_has_an_init_file():
    for name in ("platform", "actors", "studies", "results"):
        assert (ROOT / name).is_dir() and not (ROOT / name / "__init__.py").exists()
    assert not (ROOT / "tests" / "platform").exists()


def test_platform_modules_never_import_ray():
    platform = [m for m in GRAPH if m.startswith("platform.")]
    code = ("import sys\n" + "".join(f"import sfprompt.{m}\n" for m in platform)
            + "print('ray' in sys.modules)")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert len(platform) >= 40
    importlib.import_module("sfprompt.platform.config.load")


def test_ray_is_imported_only_in_actors():
    for name, path in modules().items():
        if name.split(".")[0] == "actors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "ray" or n.startswith("ray.") for n in names), \
                f"{name} imports {names}"


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(GRAPH[module]):
            if state.get(other) == 1:
                raise AssertionError("import cycle: " + " -> ".join(
                    path[path.index(other):] + [module, other]))
            if other not in state:
                visit(other, path + [module])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])
    assert len(GRAPH) >= 60 and sum(map(len, GRAPH.values())) >= 150  # it saw the imports


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_one_way(module):
    folder = module.split(".")[0] if module.split(".")[0] in FOLDERS else "sfprompt"
    for other in GRAPH[module] - {"sfprompt"}:  # the package root (version, paths) is for all
        theirs = other.split(".")[0] if other.split(".")[0] in FOLDERS else "sfprompt"
        assert theirs == folder or theirs in MAY_IMPORT[folder], f"{module} imports {other}"
        if folder == theirs == "platform":
            assert rank(other) <= rank(module), f"{module} imports {other}, a room above it"


def test_the_layout_check_sees_a_planted_cycle(tmp_path):
    # The cycle check itself: two modules that import each other are caught.
    (tmp_path / "a.py").write_text("from sfprompt.b import x\n")
    (tmp_path / "b.py").write_text("import sfprompt.a\n")
    known = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    assert imports(known["a"], known) == {"b"} and imports(known["b"], known) == {"a"}
