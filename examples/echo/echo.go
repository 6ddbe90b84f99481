package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/offerloop/n8nrunner"
)

// Item is one n8n item as the Code node passes it.
type Item struct {
	JSON       map[string]any  `json:"json"`
	PairedItem json.RawMessage `json:"pairedItem,omitempty"`
}

// echo returns the task's input items with a field added to each. Python
// tasks carry their items in the settings; JavaScript tasks ask the broker
// for them, as n8n's own JavaScript runner does.
func echo(ctx context.Context, t *n8nrunner.Task) (n8nrunner.Result, error) {
	items, err := inputItems(ctx, t)
	if err != nil {
		return n8nrunner.Result{}, err
	}
	out := make([]Item, len(items))
	for i, it := range items {
		fields := make(map[string]any, len(it.JSON)+1)
		for k, v := range it.JSON {
			fields[k] = v
		}
		fields["echoedBy"] = "n8nrunner"
		out[i] = Item{JSON: fields}
	}
	return n8nrunner.Result{Value: out}, nil
}

func inputItems(ctx context.Context, t *n8nrunner.Task) ([]Item, error) {
	var settings struct {
		Items []Item `json:"items"`
	}
	if err := t.DecodeSettings(&settings); err != nil {
		return nil, err
	}
	if settings.Items != nil || t.Type != "javascript" {
		return settings.Items, nil
	}

	data, err := t.RequestData(ctx, n8nrunner.DataRequestParams{
		Input: n8nrunner.DataRequestInput{Include: true},
	})
	if err != nil {
		return nil, fmt.Errorf("echo: request input items: %w", err)
	}
	var resp struct {
		InputData struct {
			Main [][]Item `json:"main"`
		} `json:"inputData"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("echo: decode input items: %w", err)
	}
	if len(resp.InputData.Main) == 0 {
		return []Item{}, nil
	}
	return resp.InputData.Main[0], nil
}
