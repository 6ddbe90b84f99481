# Runs the Python code of one n8n Code-node task for pyexec.
#
# Reads a job from stdin as JSON: {"code", "mode", "items", "query",
# "continueOnFail"}. Writes one JSON object to stdout when done:
#
#   {"prints": [[arg, ...], ...], "result": <the code's return value>}
#   {"prints": [...], "outcomes": [{"value": ...} | {"error": {...}}, ...]}
#   {"prints": [...], "error": {"message", "description"}}
#
# "result" in runOnceForAllItems mode, "outcomes" (one per item run) in
# runOnceForEachItem mode, "error" when the code cannot run or fails. Each
# print() call is one list of its arguments rendered as strings.
#
# While the code runs, file descriptor 1 is the stderr pipe, so stray
# writes to stdout (sys.stdout.write, os.system, C extensions) cannot
# corrupt the result.
import sys

# With -c, Python looks for modules in the working directory first; a
# json.py there must not replace the standard library's.
sys.path = [p for p in sys.path if p not in ("", ".")]

import ast  # noqa: E402
import builtins  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import traceback  # noqa: E402

CODE_FILE = "<code>"
FUNCTION = "__n8n_code"


def main():
    job = json.loads(sys.stdin.buffer.read())
    result_fd = os.dup(1)  # not inherited by the code's children
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)

    prints = []
    try:
        body = run(job, prints)
    except BaseException as e:  # a fault of this script, not of the code
        body = '"error":' + dumps({"message": "pyexec: " + describe(e), "description": ""})
    reply = '{"prints":' + dumps(prints) + "," + body + "}"
    write_all(result_fd, reply.encode("utf-8", "replace"))
    os.close(result_fd)


def run(job, prints):
    code = job["code"]
    try:
        function = compile_function(code)
    except SyntaxError as e:
        return '"error":' + dumps(syntax_error(e))
    except ValueError as e:  # such as a NUL byte in the code
        return '"error":' + dumps({"message": describe(e), "description": ""})

    scope = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "print": capturing_print(prints),
        "_query": job.get("query"),
    }
    exec(function, scope)
    call = scope.pop(FUNCTION)

    if job["mode"] == "runOnceForAllItems":
        scope["_items"] = job["items"]
        failure, text = run_once(call, code)
        return '"error":' + failure if failure else '"result":' + text

    outcomes = []
    for item in job["items"]:
        scope["_item"] = item
        failure, text = run_once(call, code)
        outcomes.append('{"error":' + failure + "}" if failure else '{"value":' + text + "}")
        if failure and not job.get("continueOnFail"):
            break
    return '"outcomes":[' + ",".join(outcomes) + "]"


def run_once(call, code):
    """Calls the code and returns (error, "") or ("", its output as JSON)."""
    try:
        value = call()
    except BaseException as e:
        return dumps(runtime_error(e, code)), ""
    try:
        return "", dumps(value)
    except (TypeError, ValueError, RecursionError) as e:
        return dumps({
            "message": "The code's output cannot be sent to n8n: " + str(e),
            "description": "Return dictionaries, lists, strings, numbers, booleans and None only.",
        }), ""


def compile_function(code):
    """Compiles code as the body of a function without arguments, so that
    it may return its result. Line numbers stay those of the code."""
    module = ast.parse(code, filename=CODE_FILE, mode="exec")
    wrapper = ast.parse("def " + FUNCTION + "():\n    pass\n")
    if module.body:
        wrapper.body[0].body = module.body
    return compile(wrapper, CODE_FILE, "exec")


def capturing_print(prints):
    real_print = print

    def print_(*args, sep=" ", end="\n", file=None, flush=False):
        if file is not None and file is not sys.stdout:
            real_print(*args, sep=sep, end=end, file=file, flush=flush)
            return
        prints.append([render(a) for a in args])

    return print_


def render(value):
    """Renders a print() argument as n8n's Python runner does: strings and
    other values as their repr, lists and dicts as JSON, which n8n shows
    as objects in the browser console."""
    if isinstance(value, (dict, list)):
        try:
            return json.dumps(value, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            pass
    return repr(value)


def dumps(value):
    """Encodes the code's output; a value JSON cannot hold is the code's
    fault and raises ValueError or TypeError with the reason."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def describe(e):
    text = str(e)
    return type(e).__name__ + (": " + text if text else "")


def syntax_error(e):
    message = type(e).__name__ + ": " + (e.msg or "invalid syntax")
    return {"message": message, "description": where(e.lineno, (e.text or "").strip())}


def runtime_error(e, code):
    """Describes an exception of the code, with the line of the code it
    was raised in (or passed through last, for an error in a library)."""
    line = None
    for frame in traceback.extract_tb(e.__traceback__):
        if frame.filename == CODE_FILE:
            line = frame.lineno
    source = ""
    lines = code.splitlines()
    if line is not None and 0 < line <= len(lines):
        source = lines[line - 1].strip()
    return {"message": describe(e), "description": where(line, source)}


def where(line, source):
    if line is None:
        return ""
    return "Error on line " + str(line) + (": " + source if source else "")


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


main()
