// loadgen: a small closed-loop gRPC load generator for grpc_obo's benchmarks.
//
// What h2load cannot do: a different bearer token on each request (rotating over a list,
// or picked at random), so a server sees many users' tokens at once. Unary calls of one
// method with a fixed, already-serialized request message; `-conns` HTTP/2 connections,
// `-inflight` calls in flight in all. Runs for `-duration` or for `-n` calls, whichever
// is given, then prints one JSON object on stdout:
//
//	{"calls": 12345, "ok": 12345, "seconds": 3.0, "rps": 4115.0, "codes": {},
//	 "p50_ms": 1.2, "p90_ms": ..., "p99_ms": ..., "max_ms": ...}
//
// Tokens: `-tokens FILE` holds one token per line (never printed); without it no
// authorization header is sent. `-pick rotate` (default) uses token i mod len for call i
// (every token in turn), `-pick random` a uniformly random one. `-start K` starts the
// rotation at token K. Loopback only: `-target` must be 127.0.0.1, ::1 or localhost.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec sends and receives already-serialized protobuf bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" } // the wire content-subtype stays application/grpc+proto

var _ encoding.Codec = rawCodec{}

type result struct {
	Calls   int64            `json:"calls"`
	OK      int64            `json:"ok"`
	Seconds float64          `json:"seconds"`
	RPS     float64          `json:"rps"`
	Codes   map[string]int64 `json:"codes"`
	P50     float64          `json:"p50_ms"`
	P90     float64          `json:"p90_ms"`
	P99     float64          `json:"p99_ms"`
	Max     float64          `json:"max_ms"`
	Tokens  int              `json:"tokens"`
}

func readTokens(path string) ([]metadata.MD, error) {
	if path == "" {
		return []metadata.MD{nil}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mds []metadata.MD
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64*1024), 64*1024)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" {
			continue
		}
		mds = append(mds, metadata.Pairs("authorization", "Bearer "+line))
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	if len(mds) == 0 {
		return nil, fmt.Errorf("no token in %s", path)
	}
	return mds, nil
}

func main() {
	target := flag.String("target", "", "host:port (loopback only)")
	method := flag.String("method", "/grpc_obo.testing.v1.Echo/UnaryUnary", "full method name")
	bodyFile := flag.String("body", "", "file with the serialized request message (empty: empty message)")
	tokensFile := flag.String("tokens", "", "file with one bearer token per line")
	pick := flag.String("pick", "rotate", "rotate | random")
	start := flag.Int64("start", 0, "first token index for -pick rotate")
	conns := flag.Int("conns", 4, "HTTP/2 connections")
	inflight := flag.Int("inflight", 64, "calls in flight, spread over the connections")
	n := flag.Int64("n", 0, "calls to make (0: run for -duration)")
	duration := flag.Duration("duration", 3*time.Second, "how long to run when -n is 0")
	timeout := flag.Duration("timeout", 60*time.Second, "deadline of each call")
	latencies := flag.Bool("latency", false, "record each call's latency (percentiles in the output)")
	flag.Parse()

	host, _, err := net.SplitHostPort(*target)
	if err != nil || (host != "127.0.0.1" && host != "::1" && host != "localhost") {
		fmt.Fprintln(os.Stderr, "loadgen: -target must be a loopback host:port")
		os.Exit(2)
	}
	if *pick != "rotate" && *pick != "random" {
		fmt.Fprintln(os.Stderr, "loadgen: -pick is rotate or random")
		os.Exit(2)
	}
	body := []byte{}
	if *bodyFile != "" {
		if body, err = os.ReadFile(*bodyFile); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(2)
		}
	}
	mds, err := readTokens(*tokensFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}

	clients := make([]*grpc.ClientConn, *conns)
	for i := range clients {
		clients[i], err = grpc.NewClient(*target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})),
			// One connection per ClientConn: distinct ClientConns are distinct connections.
			grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<22))
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(2)
		}
		clients[i].Connect()
		defer clients[i].Close()
	}

	var next atomic.Int64 // calls started (also the rotation index)
	var ok atomic.Int64
	var mu sync.Mutex
	codeCounts := map[string]int64{}
	var lat []int64
	if *latencies {
		size := *n
		if size == 0 {
			size = 1 << 20
		}
		lat = make([]int64, size)
	}
	var recorded atomic.Int64

	deadline := time.Time{}
	began := time.Now()
	if *n == 0 {
		deadline = began.Add(*duration)
	}
	var wg sync.WaitGroup
	for w := 0; w < *inflight; w++ {
		conn := clients[w%len(clients)]
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			reply := make([]byte, 0, 256)
			for {
				i := next.Add(1) - 1
				if *n > 0 && i >= *n {
					return
				}
				if *n == 0 && time.Now().After(deadline) {
					return
				}
				var md metadata.MD
				if *pick == "random" {
					md = mds[rng.IntN(len(mds))]
				} else {
					md = mds[(*start+i)%int64(len(mds))]
				}
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				if md != nil {
					ctx = metadata.NewOutgoingContext(ctx, md)
				}
				t0 := time.Now()
				req := body
				err := conn.Invoke(ctx, *method, &req, &reply)
				elapsed := time.Since(t0)
				cancel()
				if err == nil {
					ok.Add(1)
				} else {
					code := status.Code(err)
					if code == codes.OK {
						code = codes.Unknown
					}
					mu.Lock()
					codeCounts[code.String()]++
					mu.Unlock()
				}
				if lat != nil {
					j := recorded.Add(1) - 1
					if j < int64(len(lat)) {
						lat[j] = elapsed.Nanoseconds()
					}
				}
			}
		}(uint64(w) + 1)
	}
	wg.Wait()
	seconds := time.Since(began).Seconds()

	calls := next.Load()
	if *n > 0 && calls > *n {
		calls = *n
	}
	if *n == 0 { // workers each took one index past the deadline
		calls = ok.Load()
		for _, c := range codeCounts {
			calls += c
		}
	}
	out := result{Calls: calls, OK: ok.Load(), Seconds: seconds, Codes: codeCounts, Tokens: len(mds)}
	out.RPS = float64(out.Calls) / seconds
	if lat != nil {
		m := recorded.Load()
		if m > int64(len(lat)) {
			m = int64(len(lat))
		}
		l := lat[:m]
		sort.Slice(l, func(a, b int) bool { return l[a] < l[b] })
		q := func(p float64) float64 {
			if len(l) == 0 {
				return 0
			}
			k := int(p * float64(len(l)-1))
			return float64(l[k]) / 1e6
		}
		out.P50, out.P90, out.P99, out.Max = q(0.50), q(0.90), q(0.99), q(1.0)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		os.Exit(1)
	}
}
