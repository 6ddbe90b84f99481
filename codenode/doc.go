// Package codenode gives typed settings, items and results to handlers of
// the two task types n8n's Code node requests: "python" and "javascript".
//
// The Code node sends its code, its mode and (for Python) its input items
// in the task settings; [DecodePython] and [DecodeJavaScript] decode and
// check them as n8n's own runners do. A JavaScript task carries no items:
// [InputItems] fetches them from the broker with the data request n8n's
// JavaScript runner makes, honouring the chunk of a per-item task.
//
// # Handlers
//
// [Python] and [JavaScript] turn a function of the settings into an
// [n8nrunner.Handler]. The function returns the node's output items; the
// wrapper sends them in a shape the Code node accepts and applies n8n's
// continueOnFail rule: when the node is set to continue on failure
// ("On Error: Continue" in the editor), an error of the function becomes
// the normal result [{"json": {"error": "<message>"}}] instead of a failed
// task. n8n itself would otherwise pass the node's input through without
// a word about the error.
//
//	r.Handle(codenode.TypePython, codenode.Python(serve))
//
//	func serve(ctx context.Context, t *n8nrunner.Task,
//		s codenode.PythonSettings) ([]codenode.Item, error) {
//		if s.NodeMode == codenode.RunOnceForEachItem {
//			return s.ForEachItem(ctx, transformOne)
//		}
//		return transformAll(s.Items)
//	}
//
// # Results
//
// In runOnceForAllItems mode the output is any list of items; n8n pairs
// them with the input itself. In runOnceForEachItem mode the code runs once
// per input item and each output names its input in pairedItem;
// [PythonSettings.ForEachItem] and [JavaScriptSettings.ForEachItem] do
// this, and turn a failed item into an error item when continueOnFail is
// set, as n8n's runners do. For output produced by an interpreter, such
// as Python dictionaries read back as JSON, [ParseItems] and [ParseItem]
// apply the Code node's rules: a bare object becomes {"json": object}, and
// a "json" key must hold an object.
package codenode
