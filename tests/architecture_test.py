"""The package plan, read from the code: every `rc_jax` import (module level or inside a function)
goes to the same package or a lower one, and no two modules import each other (no circle)."""

import ast
import os

from absl.testing import absltest

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "rc_jax")
# lowest first; a package may import only itself and packages before it (rc_jax/__init__.py)
LAYERS = ("routers", "measurement", "tasks", "models", "outputs", "engine", "pretrained", "report")


def _modules() -> dict[str, str]:
  """`{dotted module name: path}` of every module of the package."""
  found = {}
  for folder, _, files in os.walk(_ROOT):
    for file in files:
      if file.endswith(".py"):
        path = os.path.join(folder, file)
        parts = os.path.relpath(path, os.path.dirname(_ROOT))[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        found[".".join(parts)] = path
  return found


def _imports(path: str, modules: dict[str, str]) -> set[str]:
  """The rc_jax modules `path` imports (a name imported from a package counts as its module when
  it is one)."""
  out = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      out |= {alias.name for alias in node.names if alias.name.startswith("rc_jax")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rc_jax"):
      for alias in node.names:
        child = f"{node.module}.{alias.name}"
        out.add(child if child in modules else node.module)
  return out


def _layer(module: str) -> int | None:
  parts = module.split(".")
  return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


class ArchitectureTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.modules = _modules()
    cls.graph = {name: _imports(path, cls.modules) for name, path in cls.modules.items()}

  def test_every_module_lives_in_a_layer(self):
    loose = [m for m in self.modules if m != "rc_jax" and _layer(m) is None]
    self.assertEqual(loose, [])

  def test_no_upward_import(self):
    upward = [f"{module} -> {target}" for module, targets in self.graph.items()
              for target in targets
              if _layer(module) is not None and _layer(target) is not None
              and _layer(target) > _layer(module)]
    self.assertEqual(upward, [])

  def test_no_import_circle(self):
    graph = {m: {t for t in targets if t in self.graph and t != m}
             for m, targets in self.graph.items()}
    # a package's __init__ importing its own modules is its table of contents, not a cycle
    for module in graph:
      graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    state, cycles = {}, []

    def visit(node, stack):
      state[node] = "open"
      for target in sorted(graph[node]):
        if state.get(target) == "open":
          cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
        elif target not in state:
          visit(target, stack + [target])
      state[node] = "done"

    for module in sorted(graph):
      if module not in state:
        visit(module, [module])
    self.assertEqual(cycles, [])

  def test_every_package_says_what_it_owns_and_may_import(self):
    for package in LAYERS:
      doc = ast.get_docstring(ast.parse(open(self.modules[f"rc_jax.{package}"]).read())) or ""
      self.assertIn("import", doc, package)


if __name__ == "__main__":
  absltest.main()
