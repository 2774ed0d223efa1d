"""evaluatePixel over whole arrays: an abstract interpreter of the script's syntax tree.

The script is not compiled to Python text: its tree is walked once per call with every
per-pixel value a numpy array (one element per pixel, float64) and every value the script
builds from constants alone a Python scalar, list or dict. What JavaScript decides per pixel
is decided with masks:

- ``if``/``else`` and early ``return``: each statement runs under a mask (the pixels that
  reach it); an assignment writes ``where(mask, new, old)``; a ``return`` writes the pixels
  of the mask into the function's result and marks them done, so later statements run for
  the others only.
- ``a && b``, ``a || b``, ``c ? a : b``: both sides are computed and picked per pixel with
  JavaScript's truthiness (0 and NaN are false) and its rule that ``&&``/``||`` return an
  operand, not a boolean.
- user functions are inlined at each call (recursion is refused); arrow functions passed to
  ``.map`` and friends likewise.

Values computed from constants alone stay Python scalars, so ``const gain = 2.5`` costs nothing
per pixel and a static ``if`` takes one branch. Everything runs in float64 and outputs are
cast to float32 at the end: V8 computes in float64, and float32 arithmetic drifts past 1e-6
relative on scripts with cancellation (EVI's denominator). The band-math expression path
computes in float64 too.

Anything outside this (loops, ``sort``, ``Date``, classes, ``this``, per-pixel array indices,
assignments to globals from evaluatePixel: state kept across pixels) raises ``Refused`` naming
the line:column and the construct; the caller then runs the script in V8. Acceptance does not
depend on pixel values: the trial run at parse time walks every branch.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import BadRequestError
from app.evalscript.library import global_values
from app.evalscript.parse import ParsedScript, where
from app.evalscript.values import (
    ARITHMETIC,
    BITWISE,
    COMPARISONS,
    NULL,
    UNDEF,
    Builtin,
    Closure,
    HelperObject,
    JSArray,
    JSObject,
    Mask,
    Namespace,
    Opaque,
    Refused,
    and_mask,
    bitwise,
    is_number,
    js_not,
    js_string,
    kind,
    loose_equal,
    merge,
    scalar,
    select,
    strict_equal,
    to_js,
    to_number,
    to_static,
    truthy,
    type_of,
)

__all__ = ["Refused", "Translation"]


@dataclass(eq=False)
class Scope:
    """Variable bindings; ``function`` scopes take ``var``, block scopes ``let``/``const``."""

    parent: "Scope | None"
    function: bool = False
    is_global: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    consts: set[str] = field(default_factory=set)

    def find(self, name: str) -> "Scope | None":
        scope: Scope | None = self
        while scope is not None:
            if name in scope.values:
                return scope
            scope = scope.parent
        return None

    def function_scope(self) -> "Scope":
        scope = self
        while not scope.function and scope.parent is not None:
            scope = scope.parent
        return scope


@dataclass
class Frame:
    """One function call: its accumulated result and the pixels that returned."""

    result: Any = UNDEF
    done: np.ndarray | None = None
    returned_all: bool = False


# ---------------------------------------------------------------------- interpreter

# Bounds on what one script makes the translator do: its work is bounded by its steps (the
# trial run walks every branch, so a real run takes at most as many), its memory by the
# arrays it builds and by evaluating blocks of pixels (see Translation.run).
MAX_STEPS = 50_000
MAX_ITEMS = 4096


def new_array(items: list[Any], node: Any) -> JSArray:
    """An array of at most MAX_ITEMS items (a doubling spread in a script is not a DoS)."""
    if len(items) > MAX_ITEMS:
        raise Refused(f"arrays of more than {MAX_ITEMS:,} items", node)
    return JSArray(items)


_LOOPS = {
    "ForStatement": "'for' loops",
    "ForInStatement": "'for-in' loops",
    "ForOfStatement": "'for-of' loops",
    "WhileStatement": "'while' loops",
    "DoWhileStatement": "'do-while' loops",
    "SwitchStatement": "'switch'",
    "TryStatement": "'try'",
    "ThrowStatement": "'throw'",
    "ClassDeclaration": "classes",
    "ClassExpression": "classes",
    "BreakStatement": "'break'",
    "ContinueStatement": "'continue'",
    "LabeledStatement": "labels",
    "WithStatement": "'with'",
    "DebuggerStatement": "'debugger'",
    "ThisExpression": "'this'",
    "TemplateLiteral": "template strings",
    "TaggedTemplateExpression": "tagged templates",
    "YieldExpression": "generators",
    "AwaitExpression": "'await'",
    "Super": "'super'",
    "MetaProperty": "'new.target'",
}
_ARRAY_METHODS_REFUSED = (
    "sort",
    "filter",
    "find",
    "findIndex",
    "splice",
    "fill",
    "join",
    "flat",
    "flatMap",
    "shift",
    "unshift",
    "lastIndexOf",
    "copyWithin",
    "entries",
    "keys",
    "values",
    "toString",
)


class Interpreter:
    """Walks statements and expressions with per-pixel masks (see the module docstring).

    Args:
        exhaustive: Walk every branch, even where no pixel goes (the trial run that decides
            whether the script is translatable: acceptance must not depend on the data).

    """

    def __init__(self, exhaustive: bool):
        self.exhaustive = exhaustive
        self.stack: list[Any] = []
        self.in_pixel = False
        self.steps = 0

    # ----------------------------------------------------------------- statements

    def active(self, mask: Mask, frame: Frame) -> Mask:
        if frame.done is None:
            return mask
        return ~frame.done if mask is None else mask & ~frame.done

    def skip(self, mask: Mask) -> bool:
        return mask is not None and not self.exhaustive and not mask.any()

    def hoist(self, statements: list[Any], scope: Scope) -> None:
        for statement in statements:
            if statement.type == "FunctionDeclaration":
                if statement.id is None:
                    raise Refused("an anonymous function declaration", statement)
                scope.values[statement.id.name] = Closure(statement, scope)

    def run_block(self, statements: list[Any], scope: Scope, frame: Frame, mask: Mask) -> None:
        self.hoist(statements, scope)
        for statement in statements:
            if frame.returned_all:
                return
            active = self.active(mask, frame)
            if self.skip(active):
                return
            self.statement(statement, scope, frame, active)

    def statement(self, node: Any, scope: Scope, frame: Frame, mask: Mask) -> None:
        kind_ = node.type
        if kind_ == "ExpressionStatement":
            self.expr(node.expression, scope, mask)
        elif kind_ == "VariableDeclaration":
            self.declare(node, scope, mask)
        elif kind_ == "ReturnStatement":
            value = UNDEF if node.argument is None else self.expr(node.argument, scope, mask)
            if mask is None:
                frame.result = value
                frame.returned_all = True
            else:
                frame.result = merge(mask, value, frame.result, node)
                frame.done = mask.copy() if frame.done is None else frame.done | mask
        elif kind_ == "IfStatement":
            test = truthy(self.expr(node.test, scope, mask))
            if isinstance(test, bool):
                branch = node.consequent if test else node.alternate
                if branch is not None:
                    self.run_block([branch], Scope(scope), frame, mask)
                return
            yes = and_mask(mask, test)
            self.run_block([node.consequent], Scope(scope), frame, yes)
            if node.alternate is not None:
                self.run_block([node.alternate], Scope(scope), frame, and_mask(mask, ~test))
        elif kind_ == "BlockStatement":
            self.run_block(node.body, Scope(scope), frame, mask)
        elif kind_ in ("FunctionDeclaration", "EmptyStatement"):
            return
        elif kind_ in _LOOPS:
            raise Refused(_LOOPS[kind_], node)
        else:
            raise Refused(f"'{kind_}'", node)

    def declare(self, node: Any, scope: Scope, mask: Mask) -> None:
        for declarator in node.declarations:
            value = UNDEF if declarator.init is None else self.expr(declarator.init, scope, mask)
            if node.kind == "var":
                target = scope.function_scope()
                self.bind(declarator.id, value, target, mask, var=True)
            else:
                self.bind(declarator.id, value, scope, mask, const=node.kind == "const")

    def bind(
        self,
        pattern: Any,
        value: Any,
        scope: Scope,
        mask: Mask,
        *,
        var: bool = False,
        const: bool = False,
    ) -> None:
        """Declare the names of a pattern (identifier, [a, b], {a, b}) in ``scope``."""
        if pattern.type == "Identifier":
            name = pattern.name
            if var and name in scope.values:
                scope.values[name] = merge(mask, value, scope.values[name], pattern)
            else:
                scope.values[name] = value
            if const:
                scope.consts.add(name)
        elif pattern.type == "AssignmentPattern":
            if value is UNDEF:
                value = self.expr(pattern.right, scope, mask)
            self.bind(pattern.left, value, scope, mask, var=var, const=const)
        elif pattern.type == "ArrayPattern":
            if not isinstance(value, JSArray):
                raise Refused("destructuring a value that is not an array", pattern)
            for i, element in enumerate(pattern.elements):
                if element is None:
                    continue
                if element.type == "RestElement":
                    rest = JSArray(list(value.items[i:]))
                    self.bind(element.argument, rest, scope, mask, var=var, const=const)
                    break
                item = value.items[i] if i < len(value.items) else UNDEF
                self.bind(element, item, scope, mask, var=var, const=const)
        elif pattern.type == "ObjectPattern":
            for prop in pattern.properties:
                if prop.type != "Property" or prop.computed:
                    raise Refused("this destructuring", prop)
                key = prop.key.name if prop.key.type == "Identifier" else str(prop.key.value)
                self.bind(
                    prop.value,
                    self.member_value(value, key, prop),
                    scope,
                    mask,
                    var=var,
                    const=const,
                )
        else:
            raise Refused(f"the pattern '{pattern.type}'", pattern)

    # ---------------------------------------------------------------- expressions

    def expr(self, node: Any, scope: Scope, mask: Mask) -> Any:
        self.steps += 1
        if self.steps > MAX_STEPS:
            # Inlining multiplies work (f calls g twice, g calls h twice ...): V8 runs such
            # a script under its time limit instead.
            raise Refused(f"more than {MAX_STEPS:,} evaluation steps", node)
        kind_ = node.type
        method = getattr(self, f"e_{kind_}", None)
        if method is None:
            raise Refused(_LOOPS.get(kind_, f"'{kind_}'"), node)
        return method(node, scope, mask)

    def e_Literal(self, node: Any, scope: Scope, mask: Mask) -> Any:
        if node.regex is not None:
            raise Refused("regular expressions", node)
        value = node.value
        if value is None:
            return NULL
        if isinstance(value, bool | str):
            return value
        return float(value)

    def e_Identifier(self, node: Any, scope: Scope, mask: Mask) -> Any:
        found = scope.find(node.name)
        if found is None:
            raise Refused(f"the name '{node.name}'", node)
        return found.values[node.name]

    def e_ArrayExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        items: list[Any] = []
        for element in node.elements:
            if element is None:
                items.append(UNDEF)
            elif element.type == "SpreadElement":
                spread = self.expr(element.argument, scope, mask)
                if not isinstance(spread, JSArray):
                    raise Refused(f"spreading {kind(spread)}", element)
                items.extend(spread.items)
            else:
                items.append(self.expr(element, scope, mask))
        return new_array(items, node)

    def e_ObjectExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        props: dict[str, Any] = {}
        for prop in node.properties:
            if prop.type == "SpreadElement":
                spread = self.expr(prop.argument, scope, mask)
                if not isinstance(spread, JSObject):
                    raise Refused(f"spreading {kind(spread)} into an object", prop)
                props.update(spread.props)
                continue
            if prop.kind != "init":
                raise Refused("getters and setters", prop)
            props[self.key(prop, scope, mask)] = self.expr(prop.value, scope, mask)
        return JSObject(props)

    def key(self, prop: Any, scope: Scope, mask: Mask) -> str:
        if not prop.computed:
            if prop.key.type == "Identifier":
                return prop.key.name
            return js_string(self.e_Literal(prop.key, scope, mask))
        value = self.expr(prop.key, scope, mask)
        if isinstance(value, str | float | bool):
            return js_string(value)
        raise Refused("a computed key that varies per pixel", prop)

    def e_SequenceExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        value = UNDEF
        for expression in node.expressions:
            value = self.expr(expression, scope, mask)
        return value

    def e_ArrowFunctionExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        return Closure(node, scope)

    e_FunctionExpression = e_ArrowFunctionExpression

    def e_UnaryExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        op = node.operator
        if op == "typeof":
            if node.argument.type == "Identifier" and scope.find(node.argument.name) is None:
                return "undefined"
            return type_of(self.expr(node.argument, scope, mask))
        if op == "delete":
            raise Refused("'delete'", node)
        value = self.expr(node.argument, scope, mask)
        if op == "!":
            test = truthy(value)
            return (not test) if isinstance(test, bool) else ~test
        if op == "void":
            return UNDEF
        number = to_number(value, node)
        if op == "-":
            return scalar(np.negative(number))
        if op == "+":
            return number
        if op == "~":
            return scalar(bitwise("^", number, -1.0))
        raise Refused(f"the operator '{op}'", node)

    def e_BinaryExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        left = self.expr(node.left, scope, mask)
        right = self.expr(node.right, scope, mask)
        return self.binary(node.operator, left, right, node)

    def binary(self, op: str, left: Any, right: Any, node: Any) -> Any:
        if op == "+" and (isinstance(left, str) or isinstance(right, str)):
            if isinstance(left, str) and isinstance(right, str):
                if len(left) + len(right) > MAX_ITEMS:
                    raise Refused(f"strings longer than {MAX_ITEMS:,} characters", node)
                return left + right
            raise Refused("string concatenation with numbers", node)
        if op in ARITHMETIC:
            with np.errstate(all="ignore"):
                return scalar(ARITHMETIC[op](to_number(left, node), to_number(right, node)))
        if op in COMPARISONS:
            if isinstance(left, str) and isinstance(right, str):
                return COMPARISONS[op](left, right).item()
            return scalar(COMPARISONS[op](to_number(left, node), to_number(right, node)))
        if op in ("===", "!=="):
            equal = strict_equal(left, right, node)
            return equal if op == "===" else js_not(equal)
        if op in ("==", "!="):
            equal = loose_equal(left, right, node)
            return equal if op == "==" else js_not(equal)
        if op in BITWISE:
            return scalar(bitwise(op, to_number(left, node), to_number(right, node)))
        raise Refused(f"the operator '{op}'", node)

    def e_LogicalExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        left = self.expr(node.left, scope, mask)
        op = node.operator
        if op == "??":
            if left is UNDEF or left is NULL:
                return self.expr(node.right, scope, mask)
            return left
        test = truthy(left)
        if isinstance(test, bool):
            # JavaScript short-circuits: the other side is not evaluated.
            if (op == "&&") == test:
                return self.expr(node.right, scope, mask)
            return left
        right = self.expr(node.right, scope, mask)
        if op == "&&":
            return select(test, right, left, node)
        return select(test, left, right, node)

    def e_ConditionalExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        test = truthy(self.expr(node.test, scope, mask))
        if isinstance(test, bool):
            return self.expr(node.consequent if test else node.alternate, scope, mask)
        yes = self.expr(node.consequent, scope, and_mask(mask, test))
        no = self.expr(node.alternate, scope, and_mask(mask, ~test))
        return select(test, yes, no, node)

    # assignments

    def e_AssignmentExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        op = node.operator
        value = self.expr(node.right, scope, mask)
        if op != "=":
            value = self.binary(op[:-1], self.expr(node.left, scope, mask), value, node)
        if node.left.type in ("ArrayPattern", "ObjectPattern"):
            raise Refused("destructuring assignment", node)
        self.assign(node.left, value, scope, mask)
        return value

    def e_UpdateExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        old = to_number(self.expr(node.argument, scope, mask), node)
        new = scalar(np.add(old, 1.0 if node.operator == "++" else -1.0))
        self.assign(node.argument, new, scope, mask)
        return new if node.prefix else old

    def assign(self, target: Any, value: Any, scope: Scope, mask: Mask) -> None:
        if target.type == "Identifier":
            name = target.name
            found = scope.find(name)
            if found is None:
                raise Refused(f"assigning the undeclared name '{name}'", target)
            if found.is_global and self.in_pixel:
                raise Refused(
                    f"assigning the global '{name}' from evaluatePixel (state kept across pixels)",
                    target,
                )
            if name in found.consts:
                raise Refused(f"assigning the constant '{name}'", target)
            found.values[name] = merge(mask, value, found.values[name], target)
            return
        if target.type == "MemberExpression":
            obj = self.expr(target.object, scope, mask)
            key = self.member_key(target, scope, mask)
            if isinstance(obj, JSArray | JSObject) and obj.frozen and self.in_pixel:
                raise Refused("changing a global array or object from evaluatePixel", target)
            if isinstance(obj, JSArray):
                if not isinstance(key, float) or key != int(key) or not 0 <= key < MAX_ITEMS:
                    raise Refused("this array index", target)
                i = int(key)
                while len(obj.items) <= i:
                    obj.items.append(UNDEF)
                obj.items[i] = merge(mask, value, obj.items[i], target)
                return
            if isinstance(obj, JSObject):
                name = js_string(key)
                obj.props[name] = merge(mask, value, obj.props.get(name, UNDEF), target)
                return
            raise Refused(f"assigning a property of {kind(obj)}", target)
        raise Refused(f"assigning to '{target.type}'", target)

    # members and calls

    def member_key(self, node: Any, scope: Scope, mask: Mask) -> Any:
        if not node.computed:
            return node.property.name
        key = self.expr(node.property, scope, mask)
        if isinstance(key, float | str | bool):
            return key
        raise Refused("an index that varies per pixel", node.property)

    def e_MemberExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        obj = self.expr(node.object, scope, mask)
        key = self.member_key(node, scope, mask)
        return self.member_value(obj, key, node)

    def member_value(self, obj: Any, key: Any, node: Any) -> Any:
        if isinstance(obj, JSArray):
            if key == "length":
                return float(len(obj.items))
            if isinstance(key, float):
                if key == int(key) and 0 <= key < len(obj.items):
                    return obj.items[int(key)]
                return UNDEF
            raise Refused(f"Array.prototype.{key} used as a value", node)
        if isinstance(obj, JSObject):
            return obj.props.get(js_string(key), UNDEF)
        if isinstance(obj, Namespace):
            if key in obj.members:
                return obj.members[key]
            raise Refused(f"{obj.name}.{key}", node)
        if isinstance(obj, str) and key == "length":
            return float(len(obj))
        if isinstance(obj, Opaque):
            raise Refused(f"using '{obj.name}'", node)
        raise Refused(f"reading '{key}' of {kind(obj)}", node)

    def e_CallExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        args = self.arguments(node.arguments, scope, mask)
        callee = node.callee
        if callee.type == "MemberExpression":
            obj = self.expr(callee.object, scope, mask)
            key = self.member_key(callee, scope, mask)
            if isinstance(obj, JSArray):
                return self.array_method(obj, key, args, scope, mask, node)
            if isinstance(obj, HelperObject):
                return self.helper_method(obj, key, args, mask, node)
            function = self.member_value(obj, key, callee)
        else:
            function = self.expr(callee, scope, mask)
        return self.call(function, args, mask, node)

    def arguments(self, nodes_: list[Any], scope: Scope, mask: Mask) -> list[Any]:
        args: list[Any] = []
        for arg in nodes_:
            if arg.type == "SpreadElement":
                spread = self.expr(arg.argument, scope, mask)
                if not isinstance(spread, JSArray):
                    raise Refused(f"spreading {kind(spread)}", arg)
                args.extend(spread.items)
            else:
                args.append(self.expr(arg, scope, mask))
        return args

    def e_NewExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        callee = (
            self.expr(node.callee, scope, mask)
            if node.callee.type != "Identifier" or scope.find(node.callee.name)
            else None
        )
        if isinstance(callee, Namespace) and callee.constructor is not None:
            return callee.constructor(self.arguments(node.arguments, scope, mask), node)
        name = node.callee.name if node.callee.type == "Identifier" else "this constructor"
        raise Refused(f"'new {name}'", node)

    def call(self, function: Any, args: list[Any], mask: Mask, node: Any) -> Any:
        if isinstance(function, Builtin):
            return function.fn(args, node)
        if isinstance(function, Namespace) and "__call__" in function.members:
            return function.members["__call__"].fn(args, node)
        if isinstance(function, Closure):
            return self.call_closure(function, args, mask, node)
        if isinstance(function, Opaque):
            raise Refused(f"using '{function.name}'", node)
        raise Refused(f"calling {kind(function)}", node)

    def call_closure(self, closure: Closure, args: list[Any], mask: Mask, node: Any) -> Any:
        fn = closure.node
        if fn in self.stack:
            name = fn.id.name if getattr(fn, "id", None) is not None else "an anonymous function"
            raise Refused(f"recursion ({name} calls itself)", node)
        if fn.generator or fn.isAsync:
            raise Refused("generators and async functions", fn)
        scope = Scope(closure.scope, function=True)
        for i, param in enumerate(fn.params):
            if param.type == "RestElement":
                self.bind(param.argument, JSArray(list(args[i:])), scope, None)
                break
            self.bind(param, args[i] if i < len(args) else UNDEF, scope, None)
        self.stack.append(fn)
        try:
            if fn.expression:
                return self.expr(fn.body, scope, mask)
            frame = Frame()
            self.run_block(fn.body.body, scope, frame, mask)
            return frame.result
        finally:
            self.stack.pop()

    def helper_method(
        self, obj: HelperObject, key: Any, args: list[Any], mask: Mask, node: Any
    ) -> Any:
        if key == "process":
            return to_js(obj.obj.process(to_number(args[0] if args else UNDEF, node)))
        if key == "processList" and args and isinstance(args[0], JSArray):
            return JSArray([to_js(obj.obj.process(to_number(v, node))) for v in args[0].items])
        raise Refused(f"{obj.name}.{key}", node)

    def array_method(
        self, array: JSArray, key: Any, args: list[Any], scope: Scope, mask: Mask, node: Any
    ) -> Any:
        items = array.items
        if key in ("map", "forEach", "some", "every", "reduce") and (
            not args or not isinstance(args[0], Closure | Builtin)
        ):
            raise Refused(f"Array.prototype.{key} without a function", node)
        if key == "map":
            return JSArray(
                [self.call(args[0], [v, float(i), array], mask, node) for i, v in enumerate(items)]
            )
        if key == "forEach":
            for i, v in enumerate(items):
                self.call(args[0], [v, float(i), array], mask, node)
            return UNDEF
        if key in ("some", "every"):
            result: Any = key == "every"
            for i, v in enumerate(items):
                test = truthy(self.call(args[0], [v, float(i), array], mask, node))
                result = (result | test) if key == "some" else (result & test)
            return scalar(result)
        if key == "reduce":
            start = 0
            if len(args) > 1:
                total = args[1]
            elif items:
                total, start = items[0], 1
            else:
                raise Refused("reduce of an empty array without a start value", node)
            for i in range(start, len(items)):
                total = self.call(args[0], [total, items[i], float(i), array], mask, node)
            return total
        if key == "includes":
            target = args[0] if args else UNDEF
            found: Any = False
            for v in items:
                equal = strict_equal(v, target, node)
                if is_number(v) and is_number(target):
                    equal = equal | (np.isnan(v) & np.isnan(target))
                found = found | equal
            return scalar(found)
        if key == "indexOf":
            target = args[0] if args else UNDEF
            position: Any = -1.0
            for i in reversed(range(len(items))):
                position = scalar(
                    np.where(strict_equal(items[i], target, node), float(i), position)
                )
            return position
        if key == "concat":
            out = list(items)
            for arg in args:
                out.extend(arg.items if isinstance(arg, JSArray) else [arg])
            return new_array(out, node)
        if key == "slice":
            bounds = [to_static(a, node) for a in args[:2]]
            if not all(isinstance(b, float) for b in bounds):
                raise Refused("slice bounds that vary per pixel", node)
            start = int(bounds[0]) if bounds else None
            end = int(bounds[1]) if len(bounds) > 1 else None
            return JSArray(items[start:end])
        if key in ("push", "pop", "reverse"):
            if array.frozen and self.in_pixel:
                raise Refused("changing a global array from evaluatePixel", node)
            if key == "push":
                items.extend(merge(mask, a, UNDEF, node) for a in args)
                new_array(items, node)
                return float(len(items))
            if mask is not None:
                raise Refused(f"Array.prototype.{key} inside a per-pixel branch", node)
            if key == "pop":
                return items.pop() if items else UNDEF
            items.reverse()
            return array
        if key in _ARRAY_METHODS_REFUSED:
            raise Refused(f"Array.prototype.{key}", node)
        raise Refused(f"the array method '{key}'", node)


# ----------------------------------------------------------------------- the script


class Translation:
    """A script's evaluatePixel, accepted by the translator (else ``Refused`` at construction).

    Args:
        parsed: The parsed script.

    Raises:
        Refused: A construct the translator does not handle (with line:column).
        BadRequestError: The script returns something its setup() does not declare.

    """

    def __init__(self, parsed: ParsedScript, memory_bytes: int = 256 * 2**20):
        self.parsed = parsed
        self.memory_bytes = memory_bytes
        self.steps = 1
        self.outputs = parsed.setup.outputs
        function = parsed.functions["evaluatePixel"]
        if function.generator or function.isAsync:
            raise Refused("generators and async functions", function)
        self.function = function
        self.globals = global_scope(parsed.program.body, parsed.statements)
        # The trial run: every branch walked, so acceptance does not depend on pixel values.
        names = [band for band in parsed.setup.inputs if band != "dataMask"]
        trial = {name: np.array([[0.5, 0.25, 0.0]], dtype=np.float32) for name in names}
        self.run(trial, np.array([[True, True, False]]), exhaustive=True)
        # Each step makes at most about one array of float64 per pixel: pixels are evaluated
        # in blocks that keep all of them under memory_bytes (a whole tile for every script
        # of the corpus; a script that builds 4,000 per-pixel values goes in slices).
        self.block_pixels = max(4096, memory_bytes // (8 * self.steps))

    def run(
        self, bands: Mapping[str, np.ndarray], valid: np.ndarray, *, exhaustive: bool = False
    ) -> dict[str, np.ndarray]:
        """Run evaluatePixel over every pixel (the contract of ``Evalscript.evaluate``)."""
        shape = np.shape(valid)
        n = int(np.prod(shape))
        flat = {
            band: np.asarray(valid if band == "dataMask" else bands[band]).reshape(n)
            for band in self.parsed.setup.inputs
        }
        block = n if exhaustive else max(1, min(n, self.block_pixels))
        pieces = [
            self._run_block({b: a[i : i + block] for b, a in flat.items()}, exhaustive)
            for i in range(0, max(n, 1), block)
        ]
        out = {}
        for output_id, bands_, _ in self.outputs:
            joined = np.concatenate([piece[output_id] for piece in pieces], axis=1)
            out[output_id] = joined.reshape((bands_, *shape))
        return out

    def _run_block(self, flat: dict[str, np.ndarray], exhaustive: bool) -> dict[str, np.ndarray]:
        n = len(next(iter(flat.values())))
        sample = {band: array.astype(np.float64) for band, array in flat.items()}
        interpreter = Interpreter(exhaustive=exhaustive)
        interpreter.in_pixel = True
        params = self.function.params
        args: list[Any] = [JSObject(sample, frozen=False)]
        names = ("scenes", "inputMetadata", "customData", "outputMetadata")
        args.extend(
            Opaque(f"evaluatePixel's argument '{name}'")
            for name in names[: max(0, len(params) - 1)]
        )
        with np.errstate(all="ignore"):
            result = interpreter.call_closure(
                Closure(self.function, self.globals), args, None, self.function
            )
            if exhaustive:
                self.steps = max(1, interpreter.steps)
            return self._outputs(result, (n,), n, strict=exhaustive)

    def _outputs(
        self, result: Any, shape: tuple[int, ...], n: int, *, strict: bool
    ) -> dict[str, np.ndarray]:
        # strict: the trial run, which walks every return, checks what the script returns
        # against setup(). A real run skips the returns no pixel reaches, so what it saw
        # may be shorter (a 3-value return never taken): the missing values are NaN.
        node = self.function
        if isinstance(result, JSObject):
            declared = {output_id for output_id, _, _ in self.outputs}
            extra = [key for key in result.props if key not in declared]
            if extra and strict:
                raise _bad(
                    f"evaluatePixel returns output '{extra[0]}', not declared in setup()", node
                )
            values = {}
            for output_id, _, _ in self.outputs:
                if output_id not in result.props and strict:
                    raise _bad(f"evaluatePixel returns no output '{output_id}'", node)
                values[output_id] = result.props.get(output_id, UNDEF)
        elif len(self.outputs) == 1 or (result is UNDEF and not strict):
            values = {output_id: result for output_id, _, _ in self.outputs}
        else:
            raise _bad(
                f"evaluatePixel must return an object with the {len(self.outputs)} outputs "
                "of setup() ({ id: [values], ... })",
                node,
            )
        out: dict[str, np.ndarray] = {}
        for output_id, bands, _ in self.outputs:
            value = values[output_id]
            items = list(value.items) if isinstance(value, JSArray) else [value]
            if len(items) != bands and (strict or len(items) > bands):
                raise _bad(
                    f"evaluatePixel returns {len(items)} values for output '{output_id}' "
                    f"declared with {bands} bands",
                    node,
                )
            items.extend([UNDEF] * (bands - len(items)))
            array = np.empty((bands, n), dtype=np.float32)
            for i, item in enumerate(items):
                if isinstance(item, JSArray | JSObject | Closure | Builtin | HelperObject | str):
                    raise _bad(f"output '{output_id}' band {i} is {kind(item)}, not a number", node)
                array[i] = to_number(item, node)
            out[output_id] = array.reshape((bands, *shape))
        return out


def global_scope(body: list[Any], statements: tuple[Any, ...]) -> Scope:
    """The script's top level run once: its functions, constants and helper objects, frozen.

    Raises:
        Refused: A top-level statement the translator does not run (``new Date()`` ...).

    """
    scope = Scope(None, function=True, is_global=True)
    scope.values.update(global_values())
    interpreter = Interpreter(exhaustive=True)
    interpreter.hoist(list(body), scope)
    for statement in statements:
        interpreter.statement(statement, scope, Frame(), None)
    for value in scope.values.values():
        _freeze(value)
    return scope


def evaluate_setup(body: list[Any], statements: tuple[Any, ...], setup: Any) -> Any:
    """What ``setup()`` returns, computed without V8 (JSON-like Python data), or None.

    For setups that are not a plain literal but use only what the translator runs (top-level
    constants, ``concat``, spread ...). None when it refuses: then V8 runs setup().
    """
    try:
        scope = global_scope(body, statements)
        with np.errstate(all="ignore"):
            result = Interpreter(exhaustive=True).call_closure(
                Closure(setup, scope), [], None, setup
            )
        return _json(result)
    except Refused:
        return None


def _json(value: Any) -> Any:
    if isinstance(value, JSObject):
        return {key: _json(item) for key, item in value.props.items()}
    if isinstance(value, JSArray):
        return [_json(item) for item in value.items]
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, bool | str):
        return value
    if value is UNDEF or value is NULL:
        return None
    raise Refused(f"setup() returning {kind(value)}")


def _bad(message: str, node: Any) -> BadRequestError:
    return BadRequestError(f"evalscript: {where(node)}{message}")


def _freeze(value: Any) -> None:
    if isinstance(value, JSArray):
        if not value.frozen:
            value.frozen = True
            for item in value.items:
                _freeze(item)
    elif isinstance(value, JSObject) and not value.frozen:
        value.frozen = True
        for item in value.props.values():
            _freeze(item)
