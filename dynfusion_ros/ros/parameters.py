"""Declared node parameters: a description and range for each, checked at start-up and
whenever one is set while the node runs.

Each parameter is a ``Param``: its default, meaning (with the unit), range, whether it
may change at run time, and an optional ``check`` returning the reason a value is
refused. ``declare`` declares them all on a node; a bad start-up value raises
``ParameterError`` naming the parameter and the reason (rclpy does not call set-callbacks
for initial values), and a bad value set later is refused with the same reason through
``ros2 param set`` or the parameter service. A malformed request (a type code that does
not exist) is refused too, where rclpy's own service would raise and end the node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter


class ParameterError(ValueError):
    """A parameter value the node cannot start with."""


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    low: float | None = None  # inclusive range, for numbers
    high: float | None = None
    choices: tuple[str, ...] = ()
    runtime: bool = False  # may be set while the node runs
    check: Callable[[object], str] | None = None  # returns why a value is refused, or ""

    def descriptor(self) -> ParameterDescriptor:
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        descriptor = ParameterDescriptor(description=text, read_only=not self.runtime)
        if self.low is not None and isinstance(self.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=self.low, to_value=self.high, step=0.0)
            ]
        elif self.low is not None and isinstance(self.default, int):
            descriptor.integer_range = [
                IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)
            ]
        return descriptor

    def refusal(self, value: object) -> str:
        """Why ``value`` cannot be taken, or "" (ranges are also enforced by rclpy)."""
        if self.choices and value not in self.choices:
            return f"{value!r} is not one of {', '.join(self.choices)}"
        if self.low is not None and not self.low <= value <= self.high:
            return f"{value} is outside [{self.low}, {self.high}]"
        return self.check(value) if self.check else ""


def _start_up_problem(param: Param, error: Exception) -> str:
    """rclpy's refusal of a start-up value in one line, with the fix for the usual slip."""
    if isinstance(error, InvalidParameterTypeException) and isinstance(param.default, float):
        return f"expects a floating-point number (write {param.default!r}, not an integer)"
    return str(error).splitlines()[0]


def declare(
    node: Node, params: Sequence[Param], on_change: Callable[[str, object], None]
) -> dict[str, object]:
    """Declare ``params`` on ``node`` and return their start-up values. ``on_change``
    hears every accepted run-time change."""
    by_name = {p.name: p for p in params}
    values = {}
    for param in params:
        try:
            value = node.declare_parameter(param.name, param.default, param.descriptor()).value
        except ParameterException as error:  # a wrong type, a value outside the range
            raise ParameterError(
                f"{node.get_name()}: parameter {param.name}: {_start_up_problem(param, error)}"
            ) from None
        reason = param.refusal(value)
        if reason:
            raise ParameterError(f"{node.get_name()}: parameter {param.name}: {reason}")
        values[param.name] = value

    def validate(changes: list[Parameter]) -> SetParametersResult:
        for change in changes:
            param = by_name.get(change.name)
            if param is None:
                continue  # use_sim_time and other parameters rclpy owns
            reason = param.refusal(change.value)
            if reason:
                return SetParametersResult(successful=False, reason=f"{change.name}: {reason}")
        return SetParametersResult(successful=True)

    def apply(changes: list[Parameter]) -> None:
        for change in changes:
            if change.name in by_name:
                on_change(change.name, change.value)

    node.add_on_set_parameters_callback(validate)
    node.add_post_set_parameters_callback(apply)
    guard_parameter_services(node)
    return values


def guard_parameter_services(node: Node) -> None:
    """Answer a malformed parameter request (a type code no Parameter.Type has, a value
    that does not fit it) with a refusal instead of letting rclpy's service raise, which
    would end the node: any client on the graph could otherwise stop it."""
    for service in node.services:
        if service.srv_name.endswith(("/set_parameters", "/set_parameters_atomically")):
            service.callback = _guarded(service.callback)


def _guarded(callback: Callable):
    def answer(request, response):
        try:
            if any(not parameter.name for parameter in request.parameters):
                raise ValueError("a parameter without a name")  # rclpy would declare it
            return callback(request, response)
        except (ValueError, TypeError, KeyError) as error:
            refusal = SetParametersResult(successful=False, reason=f"malformed request: {error}")
            if hasattr(response, "results"):  # SetParameters: one result per parameter
                response.results = [refusal for _ in request.parameters]
            else:
                response.result = refusal
            return response

    return answer
