// Package rest is a Go client of Haven's REST API (the ODK Central-shaped
// endpoints under /v1), used by Haven's own commands.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// Client talks to one Haven server as one logged-in user.
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
	// Session, when set, is refreshed before its access token expires, and
	// OnRefresh is told of the new tokens (to save them).
	Session   *Session
	OnRefresh func(*Session)
	// Header holds headers sent with every request (X-XlsForm-FormId-Fallback).
	Header map[string]string
}

// Session is what a login or a refresh answers.
type Session struct {
	Server           string    `json:"server"`
	Token            string    `json:"token"`
	ExpiresAt        time.Time `json:"expiresAt"`
	RefreshToken     string    `json:"refreshToken"`
	SessionExpiresAt time.Time `json:"sessionExpiresAt"`
}

// Resume returns a client for a saved session.
func Resume(s *Session, onRefresh func(*Session)) *Client {
	return &Client{BaseURL: s.Server, Token: s.Token, HTTP: &http.Client{Timeout: time.Minute}, Session: s, OnRefresh: onRefresh}
}

// fresh swaps the refresh token for new tokens when the access token has
// less than a minute left.
func (c *Client) fresh(ctx context.Context) error {
	s := c.Session
	if s == nil || time.Until(s.ExpiresAt) > time.Minute {
		return nil
	}
	if time.Now().After(s.SessionExpiresAt) {
		return &Error{Status: 401, Message: "Your session has ended. Log in again (haven login)."}
	}
	body, _ := json.Marshal(map[string]string{"refreshToken": s.RefreshToken})
	var next Session
	c.Token = ""
	if err := c.send(ctx, "POST", "/v1/sessions/refresh", "application/json", bytes.NewReader(body), &next); err != nil {
		return err
	}
	next.Server = s.Server
	c.Session, c.Token = &next, next.Token
	if c.OnRefresh != nil {
		c.OnRefresh(&next)
	}
	return nil
}

// Error is an error answer of the API.
type Error struct {
	Status  int
	Code    float64
	Message string
	// Details are the refusal's particulars (a form's problems, by row).
	Details map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// Login opens a session and returns a client that uses it.
func Login(ctx context.Context, baseURL, email, password string) (*Client, error) {
	c := &Client{BaseURL: strings.TrimRight(baseURL, "/"), HTTP: &http.Client{Timeout: time.Minute}}
	var s Session
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	if err := c.send(ctx, "POST", "/v1/sessions", "application/json", bytes.NewReader(body), &s); err != nil {
		return nil, err
	}
	s.Server = c.BaseURL
	c.Token, c.Session = s.Token, &s
	return c, nil
}

// Logout ends the session on the server. Only the holder of its refresh
// token can: an access token alone does not end a session.
func (c *Client) Logout(ctx context.Context) error {
	if c.Session == nil || c.Session.RefreshToken == "" {
		return &Error{Status: 400, Message: "This client has no refresh token, so it cannot end its session; it ends by itself when it expires."}
	}
	if err := c.fresh(ctx); err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"refreshToken": c.Session.RefreshToken})
	return c.send(ctx, "DELETE", "/v1/sessions/current", "application/json", bytes.NewReader(body), nil)
}

// Stream fetches path and copies the body to w as it arrives (exports have
// no overall time limit). It returns the response's headers.
func (c *Client) Stream(ctx context.Context, path string, w io.Writer) (http.Header, error) {
	if err := c.fresh(ctx); err != nil {
		return nil, err
	}
	resp, err := c.request(ctx, "GET", path, "", nil, &http.Client{Transport: c.HTTP.Transport})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return nil, fmt.Errorf("the download was cut: %w", err)
	}
	return resp.Header, nil
}

// Get fetches path and returns the body as it is (a submission's XML, a
// file), or an *Error for an error answer.
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) {
	var raw rawBody
	err := c.Do(ctx, "GET", path, "", nil, &raw)
	return raw, err
}

// rawBody receives a body without decoding it.
type rawBody []byte

// Do sends a request and decodes a JSON answer into out (when not nil; a
// *rawBody takes the body as it is).
func (c *Client) Do(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	if err := c.fresh(ctx); err != nil {
		return err
	}
	return c.send(ctx, method, path, contentType, body, out)
}

// request sends a request and returns a successful response, or an *Error.
func (c *Client) request(ctx context.Context, method, path, contentType string, body io.Reader, hc *http.Client) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for k, v := range c.Header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		e := &Error{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		return nil, e
	}
	return resp, nil
}

func (c *Client) send(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	resp, err := c.request(ctx, method, path, contentType, body, c.HTTP)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch out := out.(type) {
	case nil:
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	case *rawBody:
		*out, err = io.ReadAll(resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) json(ctx context.Context, method, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.Do(ctx, method, path, "application/json", bytes.NewReader(b), out)
}

// CreateProject makes a project.
func (c *Client) CreateProject(ctx context.Context, name string) (*haven.Project, error) {
	var p haven.Project
	return &p, c.json(ctx, "POST", "/v1/projects", map[string]string{"name": name}, &p)
}

// CreateForm uploads an XForm to a project, published at once when publish is true.
func (c *Client) CreateForm(ctx context.Context, projectID int64, xform []byte, publish bool) (*haven.Form, error) {
	var f haven.Form
	return &f, c.Do(ctx, "POST", fmt.Sprintf("/v1/projects/%d/forms?publish=%v", projectID, publish), "application/xml", bytes.NewReader(xform), &f)
}

// AppUser is a new app user with its device settings.
type AppUser struct {
	haven.AppUser
	ServerURL       string `json:"serverUrl"`
	CollectSettings string `json:"collectSettings"`
}

// CreateAppUser makes a device credential in a project.
func (c *Client) CreateAppUser(ctx context.Context, projectID int64, displayName string) (*AppUser, error) {
	var au AppUser
	return &au, c.json(ctx, "POST", fmt.Sprintf("/v1/projects/%d/app-users", projectID), map[string]string{"displayName": displayName}, &au)
}

// UploadDraftAttachment uploads a media file the form's draft expects.
func (c *Client) UploadDraftAttachment(ctx context.Context, projectID int64, xmlFormID, name string, content []byte) error {
	return c.Do(ctx, "POST", fmt.Sprintf("/v1/projects/%d/forms/%s/draft/attachments/%s", projectID, url.PathEscape(xmlFormID), url.PathEscape(name)), "application/octet-stream", bytes.NewReader(content), nil)
}

// PublishDraft publishes a form's draft (with version, when not empty)
// and returns the form as it became.
func (c *Client) PublishDraft(ctx context.Context, projectID int64, xmlFormID, version string) (*haven.Form, error) {
	form := fmt.Sprintf("/v1/projects/%d/forms/%s", projectID, url.PathEscape(xmlFormID))
	path := form + "/draft/publish"
	if version != "" {
		path += "?version=" + url.QueryEscape(version)
	}
	if err := c.Do(ctx, "POST", path, "", nil, nil); err != nil {
		return nil, err
	}
	var f haven.Form
	return &f, c.Do(ctx, "GET", form, "", nil, &f)
}

// AssignForm lets an app user list, download and submit to a form (app
// users see only the forms assigned to them, as in ODK Central).
func (c *Client) AssignForm(ctx context.Context, projectID int64, xmlFormID string, actorID int64) error {
	return c.json(ctx, "POST", fmt.Sprintf("/v1/projects/%d/forms/%s/assignments/app-user/%d", projectID, url.PathEscape(xmlFormID), actorID), nil, nil)
}
