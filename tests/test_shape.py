"""The shape of the code, checked: no function over 70 lines in the top-level modules (a longer one holds steps
that deserve names), and no import cycle among the repository's modules, lazy imports inside functions included
(an import cycle hidden in a function body still makes the two modules one concept that can only be read
together)."""
import ast

from conftest import ROOT

MAX_FUNCTION_LINES = 70


def _modules():
    """{module name: parsed source} for the top-level *.py files and the kernels package."""
    files = {p.stem: p for p in ROOT.glob("*.py")}
    for p in (ROOT / "kernels").glob("*.py"):
        files["kernels" if p.stem == "__init__" else f"kernels.{p.stem}"] = p
    return {name: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for name, p in files.items()}


def _imports(tree, known):
    """The repository modules a module imports anywhere in its body (top level, functions, branches)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known:
                found.add(name)
            if name.startswith("kernels."):
                found.add("kernels")  # importing a submodule runs the package's __init__ first
    return found


def test_no_function_over_70_lines_in_top_level_modules():
    long = []
    for p in sorted(ROOT.glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 70 lines (split them into named steps): " + ", ".join(long)


def test_no_import_cycle_among_repository_modules():
    modules = _modules()
    graph = {name: sorted(_imports(tree, modules) - {name}) for name, tree in modules.items()}
    state, path = {}, []  # state: 1 = on the current path, 2 = finished

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_cycle_check_finds_a_lazy_import_cycle():
    """The check itself: a cycle made only by an import inside a function is found."""
    a = ast.parse("import b\n")
    b = ast.parse("def f():\n    from a import x\n")
    known = {"a": a, "b": b}
    assert _imports(a, known) == {"b"} and _imports(b, known) == {"a"}
