package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/coder/websocket"
)

// baseline is the floor an idle runner is measured against: it connects
// and registers the way a runner does (N8N_RUNNERS_TASK_BROKER_URI and a
// one-shot N8N_RUNNERS_GRANT_TOKEN), then only keeps reading (to answer
// pings) and wakes every 250 ms, the offer loop's tick, doing nothing. It
// sends no offers. It returns when the connection ends.
func baseline(ctx context.Context) error {
	base, err := url.Parse(os.Getenv("N8N_RUNNERS_TASK_BROKER_URI"))
	if err != nil || base.Host == "" {
		return fmt.Errorf("baseline needs N8N_RUNNERS_TASK_BROKER_URI")
	}
	header := http.Header{"Authorization": {"Bearer " + os.Getenv("N8N_RUNNERS_GRANT_TOKEN")}}
	ws, _, err := websocket.Dial(ctx, "ws://"+base.Host+"/runners/_ws?id=baseline",
		&websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	if _, _, err := ws.Read(ctx); err != nil { // broker:inforequest
		return err
	}
	info := `{"type":"runner:info","name":"baseline","types":["javascript"]}`
	if err := ws.Write(ctx, websocket.MessageText, []byte(info)); err != nil {
		return err
	}

	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-ended:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
