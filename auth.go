package n8nrunner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// maxAuthResponse bounds the body read from POST /runners/auth; a grant
// token answer is under 100 bytes.
const maxAuthResponse = 64 << 10

// fetchGrantToken exchanges the auth token for a single-use grant token at
// POST {base}/runners/auth. Neither token appears in a returned error.
func fetchGrantToken(ctx context.Context, client *http.Client, base *url.URL,
	authToken string) (string, error) {
	body, err := json.Marshal(struct {
		Token string `json:"token"`
	}{authToken})
	if err != nil {
		return "", fmt.Errorf("n8nrunner: fetch grant token: %w", err)
	}
	u := *base
	u.Path = "/runners/auth"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("n8nrunner: fetch grant token: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")

	resp, err := client.Do(req)
	if err != nil {
		var netErr net.Error
		if errors.As(err, &netErr) {
			return "", fmt.Errorf("n8nrunner: fetch grant token from %s: %w: %w",
				base.Host, ErrUnreachable, err)
		}
		return "", fmt.Errorf("n8nrunner: fetch grant token from %s: %w", base.Host, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAuthResponse))
	if err != nil {
		return "", fmt.Errorf("n8nrunner: fetch grant token: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", &StatusError{Op: "auth", StatusCode: resp.StatusCode}
	}

	var answer struct {
		Data struct {
			Token string `json:"token"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &answer); err != nil || answer.Data.Token == "" {
		return "", fmt.Errorf("n8nrunner: fetch grant token: " +
			"answer is not {\"data\":{\"token\":...}}")
	}
	return answer.Data.Token, nil
}
