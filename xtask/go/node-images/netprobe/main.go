// Command netprobe sends and answers real packets in the tests' node:
//
//	netprobe serve ADDR     answers every HTTP request with "netprobe <hostname>"
//	netprobe get URL [N]    GETs URL (3 s timeout), up to N times (default 1) a
//	                        second apart until it gets a 2xx answer; prints the
//	                        last answer or error and exits 0 on a 2xx, else 1
//
//	netprobe post URL BODY KEY
//	                        POSTs the JSON BODY to URL with the header x-api-key: KEY
//	                        (30 s timeout, a runtime's run), again a second later while
//	                        nothing answers (up to 10 times: the enforcer learns a new
//	                        pod's address a moment after it starts); prints the status
//	                        and the answer, exits 0 on a 2xx answer, else 1
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
	"strings"
	"time"
)

func main() {
	if len(os.Args) == 5 && os.Args[1] == "post" {
		code := post(os.Args[2], os.Args[3], os.Args[4])
		for try := 1; code == 2 && try < 10; try++ {
			time.Sleep(time.Second)
			code = post(os.Args[2], os.Args[3], os.Args[4])
		}
		if code != 0 {
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) < 3 || len(os.Args) > 4 {
		fmt.Fprintln(os.Stderr, "usage: netprobe serve ADDR | netprobe get URL [ATTEMPTS] | netprobe refused URL ATTEMPTS | netprobe post URL BODY KEY")
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
		fmt.Fprintf(os.Stderr, "netprobe: unknown command %q: use serve, get, refused or post\n", os.Args[1])
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

// post returns 0 on a 2xx answer, 1 on another answer, 2 when nothing answered.
func post(url, body, key string) int {
	request, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		fmt.Println("netprobe:", err)
		return 1
	}
	request.Header.Set("content-type", "application/json")
	request.Header.Set("x-api-key", key)
	return send(request, 30*time.Second)
}

// get returns 0 on a 2xx answer, 1 on another answer, 2 when nothing answered.
func get(url string) int {
	request, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fmt.Println("netprobe:", err)
		return 1
	}
	return send(request, 3*time.Second)
}

// send prints the answer (or why there is none) and returns 0 on a 2xx
// answer, 1 on another answer, 2 when nothing answered. A new connection each
// time: an established one outlives a policy (the enforcer lets established
// connections finish), so reusing it would show what the network allowed
// when it was opened.
func send(request *http.Request, timeout time.Duration) int {
	client := http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(request)
	if err != nil {
		fmt.Println("netprobe: unreachable:", err)
		return 2
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 65536))
	fmt.Printf("netprobe: %s: %s\n", resp.Status, answer)
	if resp.StatusCode/100 != 2 {
		return 1
	}
	return 0
}
