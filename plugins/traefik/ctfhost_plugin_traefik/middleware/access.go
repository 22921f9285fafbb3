// Package access is ctfhost's instance access check, run by Traefik itself
// (a local plugin, interpreted by Yaegi; standard library only).
//
// Each instance router has its own middleware of this plugin, configured by
// ctfhost with the instance's id, its team and its current expiry. A request
// carrying a cookie that ctfhost minted for exactly that instance and team,
// under a key Traefik holds (keysFile), passes while the instance has not
// expired, with X-Ctfhost-Team and X-Ctfhost-Instance set for the backend.
// Anything else goes to ctfhost's forward-auth endpoint, as Traefik's
// forwardAuth middleware would send it, and its answer is what the client
// gets: sign-in redirects, access-link redemption and the refusal pages stay
// ctfhost's.
//
// Cookie: "c2.<kid>.<instance>.<team>.<mac>", where <team> is the team id in
// unpadded base64url and <mac> is unpadded base64url of
// HMAC-SHA256(key[kid], "ctfhost-access.c2.<kid>.<instance>.<team>").
//
// Keys file: one "<kid> <key in unpadded base64url>" per line; every key
// listed is accepted (two during a rotation). It is read again when it
// changes, at most once per second.
//
// The requests it hands to ctfhost are limited per instance (authRate per
// second on average, bursts of authBurst): beyond, the client gets 429 and
// ctfhost is not asked, so a flood without a valid cookie cannot reach the
// control plane. Requests with a valid cookie are never limited here.
package access

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Config is the middleware's part of Traefik's dynamic configuration.
type Config struct {
	Instance    string `json:"instance,omitempty"`
	Team        string `json:"team,omitempty"`    // unpadded base64url of the team id
	Expires     int64  `json:"expires,omitempty"` // Unix seconds: the instance's current expiry
	KeysFile    string `json:"keysFile,omitempty"`
	ForwardAuth string `json:"forwardAuth,omitempty"`
	CookieName  string `json:"cookieName,omitempty"`
	// the longest forward-auth answer relayed to the client
	MaxAuthBody int64 `json:"maxAuthBody,omitempty"`
	// seconds a forward-auth call may take
	AuthTimeout int `json:"authTimeout,omitempty"`
	// forward-auth calls per second for this instance, on average (0: no limit), and the burst allowed
	AuthRate  float64 `json:"authRate,omitempty"`
	AuthBurst float64 `json:"authBurst,omitempty"`
}

// CreateConfig gives the defaults Traefik fills in from the dynamic configuration.
func CreateConfig() *Config {
	return &Config{CookieName: "ctfhost_access", MaxAuthBody: 262144, AuthTimeout: 30}
}

const (
	teamHeader     = "X-Ctfhost-Team"
	instanceHeader = "X-Ctfhost-Instance"
	macContext     = "ctfhost-access.c2."
)

// headers the backend gets only from ctfhost, under any spelling a backend may fold together
var ownHeaders = []string{"x-ctfhost-team", "x-ctfhost-instance"}

type keyring struct {
	path    string
	mu      sync.RWMutex
	keys    map[string][]byte
	modTime time.Time
	size    int64
	checked time.Time
}

var (
	ringsMu sync.Mutex
	rings   = map[string]*keyring{}
)

// ringFor shares one keyring per file among all the routers' middlewares.
func ringFor(path string) *keyring {
	ringsMu.Lock()
	defer ringsMu.Unlock()
	ring, ok := rings[path]
	if !ok {
		ring = &keyring{path: path, keys: map[string][]byte{}}
		rings[path] = ring
	}
	return ring
}

func (k *keyring) refresh(now time.Time) {
	k.mu.RLock()
	fresh := now.Sub(k.checked) < time.Second
	k.mu.RUnlock()
	if fresh {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.checked) < time.Second {
		return
	}
	k.checked = now
	info, err := os.Stat(k.path)
	// one field per assignment: Yaegi drops a tuple assignment to the fields of a struct behind a pointer
	if err != nil {
		k.keys = map[string][]byte{}
		k.modTime = time.Time{}
		k.size = 0
		return
	}
	if info.ModTime().Equal(k.modTime) && info.Size() == k.size {
		return
	}
	data, err := os.ReadFile(k.path)
	if err != nil {
		return
	}
	keys := map[string][]byte{}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) != 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		key, err := base64.RawURLEncoding.DecodeString(fields[1])
		if err != nil || len(key) < 32 {
			continue
		}
		keys[fields[0]] = key
	}
	k.keys = keys
	k.modTime = info.ModTime()
	k.size = info.Size()
}

func (k *keyring) get(kid string) []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[kid]
}

// bucket is a token bucket: rate tokens a second, at most burst kept.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

// take spends a token; false (and the seconds until the next one) when there is none.
func (b *bucket) take(now time.Time) (bool, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// one field per assignment (Yaegi: see refresh)
	b.tokens = b.tokens + now.Sub(b.last).Seconds()*b.rate
	if b.tokens > b.burst {
		b.tokens = b.burst
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens = b.tokens - 1
		return true, 0
	}
	return false, int((1-b.tokens)/b.rate) + 1
}

// Access is one instance router's middleware.
type Access struct {
	next   http.Handler
	name   string
	config *Config
	ring   *keyring
	client *http.Client
	limit  *bucket
}

var (
	clientOnce sync.Once
	client     *http.Client
)

func sharedClient(timeout int) *http.Client {
	clientOnce.Do(func() {
		client = &http.Client{
			Timeout: time.Duration(timeout) * time.Second,
			// forward-auth's redirects are for the client, not followed here
			// (parameters named: Yaegi mis-wraps a function literal with unnamed ones)
			CheckRedirect: func(next *http.Request, via []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second},
		}
	})
	return client
}

// New builds the middleware of one instance router.
func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	if config.ForwardAuth == "" {
		return nil, errors.New("ctfhost access: forwardAuth (ctfhost's forward-auth URL) is required")
	}
	if config.KeysFile == "" {
		return nil, errors.New("ctfhost access: keysFile is required")
	}
	if config.AuthTimeout <= 0 {
		config.AuthTimeout = 30
	}
	if config.MaxAuthBody <= 0 {
		config.MaxAuthBody = 262144
	}
	access := &Access{next: next, name: name, config: config, ring: ringFor(config.KeysFile), client: sharedClient(config.AuthTimeout)}
	if config.AuthRate > 0 {
		burst := config.AuthBurst
		if burst < 1 {
			burst = 1
		}
		access.limit = &bucket{rate: config.AuthRate, burst: burst, tokens: burst, last: time.Now()}
	}
	return access, nil
}

func (a *Access) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	now := time.Now()
	if a.config.Instance != "" && now.Unix() < a.config.Expires && a.cookieValid(req, now) {
		team, err := base64.RawURLEncoding.DecodeString(a.config.Team)
		if err == nil {
			stripOwnHeaders(req.Header)
			req.Header.Set(teamHeader, string(team))
			req.Header.Set(instanceHeader, a.config.Instance)
			a.next.ServeHTTP(rw, req)
			return
		}
	}
	a.forwardAuth(rw, req)
}

func (a *Access) cookieValid(req *http.Request, now time.Time) bool {
	a.ring.refresh(now)
	for _, cookie := range req.Cookies() {
		if cookie.Name == a.config.CookieName && a.valid(cookie.Value) {
			return true
		}
	}
	return false
}

func (a *Access) valid(value string) bool {
	parts := strings.Split(value, ".")
	if len(parts) != 5 || parts[0] != "c2" {
		return false
	}
	kid, instance, team, mac := parts[1], parts[2], parts[3], parts[4]
	if instance != a.config.Instance || team != a.config.Team {
		return false
	}
	key := a.ring.get(kid)
	if key == nil {
		return false
	}
	given, err := base64.RawURLEncoding.DecodeString(mac)
	if err != nil {
		return false
	}
	sum := hmac.New(sha256.New, key)
	sum.Write([]byte(macContext + kid + "." + instance + "." + team))
	return hmac.Equal(sum.Sum(nil), given)
}

// stripOwnHeaders drops a client's X-Ctfhost-Team / X-Ctfhost-Instance, and
// aliases such as X_Ctfhost_Team or X.Ctfhost.Team that CGI, PHP or WSGI
// backends read as the same header.
func stripOwnHeaders(header http.Header) {
	for name := range header {
		folded := strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
		for _, own := range ownHeaders {
			if folded == own {
				delete(header, name)
			}
		}
	}
}

// hop-by-hop headers are not forwarded (RFC 9110 section 7.6.1)
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
}

// forwardAuth asks ctfhost as Traefik's forwardAuth middleware would (trustForwardHeader off).
func (a *Access) forwardAuth(rw http.ResponseWriter, req *http.Request) {
	if a.limit != nil {
		if ok, wait := a.limit.take(time.Now()); !ok {
			rw.Header().Set("Retry-After", fmt.Sprint(wait))
			rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
			rw.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(rw, "Too many requests without access to this instance; try again in a moment.\n")
			return
		}
	}
	authReq, err := http.NewRequestWithContext(req.Context(), http.MethodGet, a.config.ForwardAuth, nil)
	if err != nil {
		http.Error(rw, "ctfhost access: bad forward-auth address", http.StatusInternalServerError)
		return
	}
	for name, values := range req.Header {
		if !hopHeaders[http.CanonicalHeaderKey(name)] && !strings.HasPrefix(strings.ToLower(name), "x-forwarded-") {
			authReq.Header[name] = values
		}
	}
	proto := "http"
	if req.TLS != nil {
		proto = "https"
	}
	clientIP, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		clientIP = req.RemoteAddr
	}
	// the entry point removed a client's X-Forwarded-For unless it trusts the sender (a shard trusts its front)
	if earlier := req.Header.Get("X-Forwarded-For"); earlier != "" {
		clientIP = earlier + ", " + clientIP
	}
	authReq.Header.Set("X-Forwarded-Method", req.Method)
	authReq.Header.Set("X-Forwarded-Proto", proto)
	authReq.Header.Set("X-Forwarded-Host", req.Host)
	authReq.Header.Set("X-Forwarded-Uri", req.URL.RequestURI())
	authReq.Header.Set("X-Forwarded-For", clientIP)
	resp, err := a.client.Do(authReq)
	if err != nil {
		http.Error(rw, "ctfhost access: forward-auth unreachable", http.StatusInternalServerError)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		body, err := io.ReadAll(io.LimitReader(resp.Body, a.config.MaxAuthBody+1))
		if err != nil || int64(len(body)) > a.config.MaxAuthBody {
			http.Error(rw, "ctfhost access: forward-auth answer too large", http.StatusInternalServerError)
			return
		}
		for name, values := range resp.Header {
			if !hopHeaders[http.CanonicalHeaderKey(name)] {
				rw.Header()[name] = values
			}
		}
		rw.Header().Set("Content-Length", fmt.Sprint(len(body)))
		rw.WriteHeader(resp.StatusCode)
		_, _ = rw.Write(body)
		return
	}
	stripOwnHeaders(req.Header)
	for _, name := range []string{teamHeader, instanceHeader} {
		if value := resp.Header.Get(name); value != "" {
			req.Header.Set(name, value)
		}
	}
	a.next.ServeHTTP(rw, req)
}
