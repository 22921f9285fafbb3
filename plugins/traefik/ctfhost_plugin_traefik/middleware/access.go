// Package access is ctfhost's instance access check, run by Traefik itself
// (a local plugin, interpreted by Yaegi; standard library only).
//
// Each instance router has its own middleware of this plugin, configured by
// ctfhost with the instance's id, its team and its current expiry. A request
// carrying a cookie that ctfhost minted for exactly that instance and team,
// under a key Traefik holds (keysFile), passes while the instance has not
// expired, with X-Ctfhost-Team and X-Ctfhost-Instance set for the backend.
// That cookie is one fixed string per key, computed once per key change, so
// the check is a substring search of the Cookie header: Yaegi interprets
// each step of Go code here at a cost several times a native call's, and
// the request path is kept to a few native calls (see ServeHTTP).
// Anything else goes to ctfhost's forward-auth endpoint, as Traefik's
// forwardAuth middleware would send it, and its answer is what the client
// gets: sign-in redirects, access-link redemption and the refusal pages stay
// ctfhost's.
//
// Cookie: "c2.<kid>.<instance>.<team>.<mac>", where <team> is the team id in
// unpadded base64url and <mac> is unpadded base64url of
// HMAC-SHA256(key[kid], "ctfhost-access.c2.<kid>.<instance>.<team>").
//
// Keys file: one "<kid> <key in unpadded base64url>" per line, the key
// ctfhost mints with first; every key listed is accepted (two during a
// rotation), but a cookie under an older key goes to ctfhost, which lets it
// in and sets a fresh cookie, so a rotation can end without logging anyone
// out. It is read again each second.
//
// Access links (/.ctfhost/access) always go to ctfhost, cookie or not: it
// redeems them. The requests it hands to ctfhost are limited per instance
// and client address (authRate per second on average, bursts of
// authBurst): beyond, the client gets 429 and ctfhost is not asked, so one
// client's flood without a valid cookie neither reaches the control plane
// at full speed nor uses up another client's share. Requests with a valid
// cookie are never limited here.
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
	"sync/atomic"
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
	// the headers of an allowing forward-auth answer the backend gets (client-sent copies removed)
	AuthResponseHeaders []string `json:"authResponseHeaders,omitempty"`
	// keep the client's X-Forwarded-* for forward-auth (Traefik sits behind a trusted proxy)
	TrustForwardHeader bool `json:"trustForwardHeader,omitempty"`
	// look for aliases of the authResponseHeaders (X_Ctfhost_Team, X.Ctfhost.Team) in every request with a
	// valid cookie and drop them; not needed when the entry point deletes every header with "_" or "." in its
	// name (aliasHeadersStrategy: delete, as ctfhost's static configuration sets), and it costs the most of
	// the check (Yaegi ranges over a map slowly). Requests handed to forward-auth are always cleaned.
	StripAliases bool `json:"stripAliases,omitempty"`
}

// CreateConfig gives the defaults Traefik fills in from the dynamic configuration.
func CreateConfig() *Config {
	return &Config{CookieName: "ctfhost_access", MaxAuthBody: 262144, AuthTimeout: 30}
}

const (
	teamHeader     = "X-Ctfhost-Team"
	instanceHeader = "X-Ctfhost-Instance"
	macContext     = "ctfhost-access.c2."
	accessPath     = "/.ctfhost/access"
	// buckets (instance and client address) remembered for the limit; beyond, all are forgotten and counting starts over
	mostBuckets = 100000
)

var folding = strings.NewReplacer("_", "-", ".", "-")

// folded is a header name as CGI, PHP or WSGI backends read it: lower case, "_" and "." as "-".
func folded(name string) string {
	return folding.Replace(strings.ToLower(name))
}

// minting is what cookies are minted with now, from one reading of the keys file: the key's id and the key
// (nil: no usable key, every request goes to forward-auth). A new value for every change of the file, so that
// each router computes the cookie it expects once per change.
type minting struct {
	kid string
	key []byte
}

// keyring follows one keys file: read when the first router needs it, then again every second by a goroutine
// of its own, so that a request only loads the current value (the interpreter makes every step of Go code on
// the request path count: a check of the file's age and the locks it took cost a fifth of the throughput).
type keyring struct {
	path    string
	current atomic.Value // *minting
	data    []byte       // the file as last read (the watcher's alone, like warned)
	warned  bool
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
		ring = &keyring{path: path}
		ring.current.Store(&minting{})
		ring.read()
		rings[path] = ring
		go ring.watch()
	}
	return ring
}

func (k *keyring) watch() {
	for {
		time.Sleep(time.Second)
		k.read()
	}
}

// read reads the file whole (a few lines): a rewrite is seen whatever its size and time stamp.
func (k *keyring) read() {
	data, err := os.ReadFile(k.path)
	if err != nil {
		if k.data != nil || k.current.Load().(*minting).key != nil {
			k.current.Store(&minting{})
		}
		k.data = nil
		if !k.warned {
			k.warned = true
			fmt.Fprintf(os.Stderr, "ctfhost access: cannot read the cookie keys (%v): every request goes to forward-auth\n", err)
		}
		return
	}
	k.warned = false
	if k.data != nil && bytes.Equal(data, k.data) {
		return
	}
	k.data = data
	// the first key listed is the one ctfhost mints with; a cookie under any other goes to ctfhost, which
	// checks it and sets a fresh one (a rotation)
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
		k.current.Store(&minting{kid: fields[0], key: key})
		return
	}
	k.current.Store(&minting{})
	fmt.Fprintf(os.Stderr, "ctfhost access: %s holds no key: every request goes to forward-auth\n", k.path)
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

// limits keeps the buckets of every instance and client address across
// config reloads (Traefik builds every middleware again on each one).
type limits struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

var shared = &limits{buckets: map[string]*bucket{}}

func (l *limits) take(key string, rate, burst float64, now time.Time) (bool, int) {
	l.mu.Lock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= mostBuckets {
			l.buckets = map[string]*bucket{}
		}
		b = &bucket{rate: rate, burst: burst, tokens: burst, last: now}
		l.buckets[key] = b
	}
	l.mu.Unlock()
	b.mu.Lock()
	b.rate = rate
	b.burst = burst
	b.mu.Unlock()
	return b.take(now)
}

// Access is one instance router's middleware.
type Access struct {
	next   http.Handler
	name   string
	config *Config
	ring   *keyring
	client *http.Client
	own    []string // folded names of the headers only ctfhost sets
	team   string   // the team id, decoded once
	teamOK bool
	// the length of the shortest of own: shorter header names cannot be one of them
	shortestOwn int
	// authResponseHeaders other than the two set on every request, as clients' copies arrive (canonical)
	others []string
	// *expectation: the one cookie value this router lets through
	expected atomic.Value
}

// expectation is the cookie a router expects under one minting key, as "name=value" (empty: none).
type expectation struct {
	mint   *minting
	cookie string
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
	if config.AuthBurst < 1 {
		config.AuthBurst = 1
	}
	if len(config.AuthResponseHeaders) == 0 {
		config.AuthResponseHeaders = []string{teamHeader, instanceHeader}
	}
	own := []string{}
	others := []string{}
	shortest := 0
	for _, name := range config.AuthResponseHeaders {
		name_ := folded(name)
		own = append(own, name_)
		if name_ != folded(teamHeader) && name_ != folded(instanceHeader) {
			others = append(others, http.CanonicalHeaderKey(name))
		}
		if shortest == 0 || len(name) < shortest {
			shortest = len(name)
		}
	}
	team, err := base64.RawURLEncoding.DecodeString(config.Team)
	return &Access{next: next, name: name, config: config, ring: ringFor(config.KeysFile),
		client: sharedClient(config.AuthTimeout), own: own, team: string(team), teamOK: err == nil && config.Team != "" && config.Instance != "",
		shortestOwn: shortest, others: others}, nil
}

// ServeHTTP lets a request with the instance's cookie through and hands any other to forward-auth. The path
// of a request with the cookie is written out in this one function: Yaegi makes every call of an interpreted
// function cost a frame and a reflect.New per argument, several times a native call.
func (a *Access) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if a.teamOK && req.URL.Path != accessPath && time.Now().Unix() < a.config.Expires {
		expected, cached := a.expected.Load().(*expectation)
		if !cached || expected.mint != a.ring.current.Load().(*minting) {
			expected = a.expect()
		}
		// the cookie "name=value" anywhere in the Cookie header: the value holds a MAC only its holder knows (a
		// client sending several Cookie lines, or an unusual spelling, is checked by forward-auth instead)
		if len(expected.cookie) > 0 && strings.Contains(req.Header.Get("Cookie"), expected.cookie) {
			header := req.Header
			if a.config.StripAliases {
				a.stripOwnHeaders(header)
			} else if len(a.others) > 0 { // usually none: skip even the (interpreted) loop
				for _, name := range a.others {
					header.Del(name)
				}
			}
			// Set replaces a client's copy of the header
			header.Set(teamHeader, a.team)
			header.Set(instanceHeader, a.config.Instance)
			a.next.ServeHTTP(rw, req)
			return
		}
	}
	a.forwardAuth(rw, req)
}

// expect computes and keeps the one cookie this router lets through under the key cookies are minted with now:
// "c2.<kid>.<instance>.<team>.<mac>" (empty: no key). A cookie under an older key does not match: ctfhost checks
// it and sets a fresh one.
func (a *Access) expect() *expectation {
	mint := a.ring.current.Load().(*minting)
	cookie := ""
	if mint.key != nil {
		signed := mint.kid + "." + a.config.Instance + "." + a.config.Team
		sum := hmac.New(sha256.New, mint.key)
		sum.Write([]byte(macContext + signed))
		cookie = a.config.CookieName + "=c2." + signed + "." + base64.RawURLEncoding.EncodeToString(sum.Sum(nil))
	}
	expected := &expectation{mint: mint, cookie: cookie}
	a.expected.Store(expected)
	return expected
}

// stripOwnHeaders drops a client's X-Ctfhost-Team / X-Ctfhost-Instance (and the other authResponseHeaders),
// with aliases such as X_Ctfhost_Team or X.Ctfhost.Team that CGI, PHP or WSGI backends read as the same header.
func (a *Access) stripOwnHeaders(header http.Header) {
	for name := range header {
		if len(name) < a.shortestOwn {
			continue // shorter than any of ctfhost's own (Host, Accept, Cookie...)
		}
		name_ := folded(name)
		for _, own := range a.own {
			if name_ == own {
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
	clientIP, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		clientIP = req.RemoteAddr
	}
	// the entry point removed a client's X-Forwarded-For unless it trusts the sender (a shard trusts its front)
	earlier := req.Header.Get("X-Forwarded-For")
	if a.config.AuthRate > 0 {
		source := clientIP
		if earlier != "" {
			source = strings.TrimSpace(strings.Split(earlier, ",")[0])
		}
		if ok, wait := shared.take(a.config.Instance+" "+source, a.config.AuthRate, a.config.AuthBurst, time.Now()); !ok {
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
	connection := strings.ToLower(req.Header.Get("Connection"))
	for name, values := range req.Header {
		name_ := folded(name)
		if hopHeaders[http.CanonicalHeaderKey(name)] || strings.Contains(connection, strings.ToLower(name)) {
			continue
		}
		if strings.HasPrefix(name_, "x-forwarded-") && !a.config.TrustForwardHeader {
			continue // set below, as Traefik's forwardAuth without trustForwardHeader does
		}
		authReq.Header[name] = values
	}
	proto := "http"
	if req.TLS != nil {
		proto = "https"
	}
	forwarded := map[string]string{
		"X-Forwarded-Method": req.Method,
		"X-Forwarded-Proto":  proto,
		"X-Forwarded-Host":   req.Host,
		"X-Forwarded-Uri":    req.URL.RequestURI(),
		"X-Forwarded-For":    clientIP,
	}
	for name, value := range forwarded {
		if !a.config.TrustForwardHeader || authReq.Header.Get(name) == "" {
			authReq.Header.Set(name, value)
		}
	}
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
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, a.config.MaxAuthBody))
	a.stripOwnHeaders(req.Header)
	for _, name := range a.config.AuthResponseHeaders {
		if value := resp.Header.Get(name); value != "" {
			req.Header.Set(name, value)
		}
	}
	// a fresh cookie (ctfhost re-mints one under the newest key): the client gets it with the backend's answer
	for _, cookie := range resp.Header.Values("Set-Cookie") {
		rw.Header().Add("Set-Cookie", cookie)
	}
	a.next.ServeHTTP(rw, req)
}
