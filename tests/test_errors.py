"""One error hierarchy: user errors carry their exit code, anything else is a bug (traceback)."""
import importlib
import inspect
import pkgutil

import click
import pytest
from click.testing import CliRunner

import flowstore
from flowstore import errors
from flowstore.cli.common import user_errors


def test_exit_codes_are_the_documented_ones():
    assert errors.InputError("x").exit_code == 2
    assert errors.UnknownNameError("x").exit_code == 2
    assert errors.EnvironmentProblem("x").exit_code == 2
    assert errors.StoreLockedError("x").exit_code == 4
    assert errors.StoreWriteError("x").exit_code == 5
    assert errors.DamagedStoreError("x").exit_code == 6
    assert errors.MissingRecordError("x").exit_code == 6


def test_key_errors_print_their_message_without_quotes():
    assert str(errors.UnknownNameError("unknown method 'x'")) == "unknown method 'x'"


def every_error_class():
    """Exception classes defined anywhere in the flowstore package (optional extras aside)."""
    found = {}
    for info in pkgutil.walk_packages(flowstore.__path__, "flowstore."):
        if info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # a module of an optional extra that is not installed
            continue
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_error_class_derives_from_the_base():
    classes = every_error_class()
    assert "flowstore.extract.plan.PlanError" in classes and "flowstore.store.format.FormatError" in classes
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, errors.FlowstoreError))
    assert outside == []


def command_raising(exc):
    @click.command()
    @user_errors
    def command():
        raise exc

    return command


@pytest.mark.parametrize("exc, code", [(errors.InputError("bad --size 'x'"), 2), (errors.StoreLockedError("locked"), 4),
                                       (errors.StoreWriteError("cannot write"), 5),
                                       (errors.DamagedStoreError("checksum"), 6)])
def test_a_user_error_is_one_line_and_its_exit_code(exc, code):
    result = CliRunner().invoke(command_raising(exc))
    assert result.exit_code == code
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert exc.message in result.output


def test_a_bug_is_not_a_usage_error():
    result = CliRunner().invoke(command_raising(ValueError("internal invariant broken")))
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)  # click's runner keeps the traceback's exception
    assert "error:" not in result.output
