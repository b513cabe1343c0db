"""The module itself: import in isolated subinterpreters, the C API
capsule, the public header."""

import os
import sys

import pytest

import tpshare


def test_imports_in_isolated_subinterpreter_with_own_gil(sub):
    assert sub.eval("tpshare.interpreter_id()") == str(sub.id)
    assert sub.eval("tpshare.interpreter_id() != 0") == "True"
    # The subinterpreter has its own module state: its own error classes.
    assert sub.eval("tpshare.NotShareableError is not None") == "True"
    main_cls = tpshare.NotShareableError
    assert sub.eval(f"id(tpshare.NotShareableError) != {id(main_cls)}") == "True"


@pytest.mark.skipif(sys.version_info < (3, 13), reason="_interpreters config is 3.13+")
def test_subinterpreter_really_has_its_own_gil():
    import _interpreters

    iid = _interpreters.create("isolated")
    try:
        config = _interpreters.get_config(iid)
        assert config.gil == "own"
        assert not config.use_main_obmalloc
        assert _interpreters.exec(iid, "import tpshare") is None
    finally:
        _interpreters.destroy(iid)


def test_get_include_holds_the_public_header():
    path = os.path.join(tpshare.get_include(), "tpshare.h")
    with open(path) as f:
        text = f.read()
    assert "TPSHARE_ABI_VERSION" in text
    assert f"#define TPSHARE_ABI_VERSION {tpshare.ABI_VERSION}" in text


def test_capsule_is_published():
    assert type(tpshare._C_API).__name__ == "PyCapsule"
    assert "tpshare._C_API" in repr(tpshare._C_API)


def test_errors_hierarchy():
    assert issubclass(tpshare.NotShareableError, tpshare.Error)
    assert issubclass(tpshare.NotShareableError, TypeError)


def test_types_cannot_be_instantiated():
    with pytest.raises(TypeError):
        tpshare.Shared()
    with pytest.raises(TypeError):
        tpshare.View()


def test_interpreter_ids_match_the_runtime(sub):
    if sys.version_info >= (3, 13):
        import _interpreters

        assert tpshare.interpreter_id() == _interpreters.get_current()[0]
    else:
        import _xxsubinterpreters

        assert tpshare.interpreter_id() == int(_xxsubinterpreters.get_current())
    assert int(sub.eval("tpshare.interpreter_id()")) == int(sub.id)


def test_type_stubs_match_the_module():
    import ast
    import pathlib

    stub = pathlib.Path(tpshare.__file__).with_name("_tpshare.pyi")
    assert (stub.parent / "py.typed").exists()
    tree = ast.parse(stub.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
    names.discard("_Handle")  # a stub-only base of the handle types
    missing = {n for n in names if not hasattr(tpshare._tpshare, n)}
    assert not missing
    public = {n for n in dir(tpshare._tpshare) if not n.startswith("_")}
    assert public <= names | {"ABI_VERSION"}, public - names


def test_lazy_interpreter_names_are_the_owner_sides():
    """tpshare lists the owner side's names without importing it (a
    worker never needs it): the list is the module's __all__."""
    from tpshare import _interpreters
    assert tpshare._INTERPRETER_NAMES == frozenset(_interpreters.__all__)
    for name in _interpreters.__all__:
        assert getattr(tpshare, name) is getattr(_interpreters, name)
