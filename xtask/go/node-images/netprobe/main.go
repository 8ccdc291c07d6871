// Command netprobe sends and answers real packets in the tests' node:
//
//	netprobe serve ADDR     answers every HTTP request with "netprobe <hostname>"
//	netprobe get URL [N]    GETs URL (3 s timeout), up to N times (default 1) a
//	                        second apart until it gets a 2xx answer; prints the
//	                        last answer or error and exits 0 on a 2xx, else 1
//
//	netprobe refused URL N  GETs URL up to N times a second apart until the
//	                        network refuses it (no answer); exits 0 then, else 1
//
// A new pod's address reaches the NetworkPolicy enforcer a moment after the pod
// starts, and until then its packets pass (kube-router fails open), so a test
// that expects to be let in tries a few times, and one that expects a refusal
// waits for it: a policy that is never enforced still fails the test.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 3 || len(os.Args) > 4 {
		fmt.Fprintln(os.Stderr, "usage: netprobe serve ADDR | netprobe get URL [ATTEMPTS] | netprobe refused URL ATTEMPTS")
		os.Exit(2)
	}
	attempts := 1
	if len(os.Args) == 4 {
		n, err := strconv.Atoi(os.Args[3])
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "netprobe: ATTEMPTS must be a positive number, not %q\n", os.Args[3])
			os.Exit(2)
		}
		attempts = n
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "get":
		code := get(os.Args[2])
		for try := 1; code != 0 && try < attempts; try++ {
			time.Sleep(time.Second)
			code = get(os.Args[2])
		}
		if code != 0 {
			os.Exit(1)
		}
	case "refused":
		for try := 1; try <= attempts; try++ {
			if try > 1 {
				time.Sleep(time.Second)
			}
			if get(os.Args[2]) == 2 {
				fmt.Printf("netprobe: refused at attempt %d of %d\n", try, attempts)
				os.Exit(0)
			}
		}
		fmt.Printf("netprobe: answered all %d attempts: never refused\n", attempts)
		os.Exit(1)
	default:
		fmt.Fprintf(os.Stderr, "netprobe: unknown command %q: use serve or get\n", os.Args[1])
		os.Exit(2)
	}
}

func serve(addr string) {
	host, _ := os.Hostname()
	answer := "netprobe " + host
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, answer)
	})
	fmt.Println("netprobe: serving on", addr)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "netprobe:", err)
		os.Exit(1)
	}
}

// get returns 0 on a 2xx answer, 1 on another answer, 2 when nothing answered.
func get(url string) int {
	// A new connection each time: an established one outlives a policy (the
	// enforcer lets established connections finish), so reusing it would
	// show what the network allowed when it was opened.
	client := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Println("netprobe: unreachable:", err)
		return 2
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("netprobe: %s: %s", resp.Status, body)
	if resp.StatusCode/100 != 2 {
		return 1
	}
	return 0
}
