// git-ssh-server: git over SSH for the tests, standing for a hosted remote
// (GitHub, GitLab, Gitea) reached with a deploy key. The SSH side is Go's
// golang.org/x/crypto/ssh (the library Gitea's and Soft Serve's built-in SSH
// servers use), independent of the libssh2 client under the operator's git2;
// the git side is git's own upload-pack and receive-pack.
//
//	git-ssh-server keygen <path>
//	    writes an ed25519 key: <path> (OpenSSH private key) and <path>.pub (authorized_keys line)
//	git-ssh-server serve -root <dir> -host-key <path> -authorized-keys <path> [-listen 127.0.0.1:0]
//	    prints "listening on <addr>" once it accepts connections
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: git-ssh-server keygen <path> | serve -root <dir> -host-key <path> -authorized-keys <path>")
	}
	switch os.Args[1] {
	case "keygen":
		if len(os.Args) != 3 {
			log.Fatal("usage: git-ssh-server keygen <path>")
		}
		if err := keygen(os.Args[2]); err != nil {
			log.Fatal(err)
		}
	case "serve":
		if err := serve(os.Args[2:]); err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatalf("unknown command %q: keygen or serve", os.Args[1])
	}
}

func keygen(path string) error {
	public, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(private, "")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	signer, err := ssh.NewPublicKey(public)
	if err != nil {
		return err
	}
	return os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(signer), 0o644)
}

func serve(args []string) error {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	root := flags.String("root", "", "folder holding the bare repositories")
	hostKey := flags.String("host-key", "", "the server's private key (OpenSSH)")
	authorized := flags.String("authorized-keys", "", "public keys allowed to log in (authorized_keys)")
	listen := flags.String("listen", "127.0.0.1:0", "address to listen on")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *root == "" || *hostKey == "" || *authorized == "" {
		return errors.New("serve needs -root, -host-key and -authorized-keys")
	}
	keyPEM, err := os.ReadFile(*hostKey)
	if err != nil {
		return err
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("host key %s: %w", *hostKey, err)
	}
	allowed, err := os.ReadFile(*authorized)
	if err != nil {
		return err
	}
	var keys [][]byte
	for rest := allowed; len(bytes.TrimSpace(rest)) > 0; {
		key, _, _, next, err := ssh.ParseAuthorizedKey(rest)
		if err != nil {
			return fmt.Errorf("authorized keys %s: %w", *authorized, err)
		}
		keys = append(keys, key.Marshal())
		rest = next
	}
	config := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			for _, k := range keys {
				if bytes.Equal(k, key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, fmt.Errorf("key of %s not authorized", meta.User())
		},
	}
	config.AddHostKey(signer)
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", listener.Addr())
	os.Stdout.Sync()
	for {
		conn, err := listener.Accept()
		if err != nil {
			return err
		}
		go handle(conn, config, *root)
	}
}

func handle(conn net.Conn, config *ssh.ServerConfig, root string) {
	server, channels, requests, err := ssh.NewServerConn(conn, config)
	if err != nil {
		log.Printf("handshake with %s: %v", conn.RemoteAddr(), err)
		return
	}
	defer server.Close()
	go ssh.DiscardRequests(requests)
	for newChannel := range channels {
		if newChannel.ChannelType() != "session" {
			newChannel.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		channel, requests, err := newChannel.Accept()
		if err != nil {
			continue
		}
		go session(channel, requests, root, server.User())
	}
}

func session(channel ssh.Channel, requests <-chan *ssh.Request, root, user string) {
	defer channel.Close()
	for request := range requests {
		if request.Type != "exec" {
			request.Reply(false, nil)
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(request.Payload, &payload); err != nil {
			request.Reply(false, nil)
			return
		}
		request.Reply(true, nil)
		status := run(channel, payload.Command, root)
		log.Printf("%s: %q exited %d", user, payload.Command, status)
		channel.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
		return
	}
}

// run serves `git-upload-pack '<path>'` or `git-receive-pack '<path>'` for a repository under root.
func run(channel ssh.Channel, command, root string) uint32 {
	service, path, ok := strings.Cut(command, " ")
	if !ok || (service != "git-upload-pack" && service != "git-receive-pack") {
		fmt.Fprintf(channel.Stderr(), "only git-upload-pack and git-receive-pack are served, not %q\n", command)
		return 1
	}
	path = strings.Trim(path, "'\"")
	dir := filepath.Join(root, filepath.Clean("/"+path))
	if _, err := os.Stat(dir); err != nil {
		fmt.Fprintf(channel.Stderr(), "fatal: '%s' does not appear to be a git repository\n", path)
		return 128
	}
	cmd := exec.Command("git", strings.TrimPrefix(service, "git-"), dir)
	cmd.Stdout = channel
	cmd.Stderr = channel.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(channel.Stderr(), "starting %s: %v\n", service, err)
		return 1
	}
	// Not cmd.Stdin = channel: Wait would then wait for the client to close its side, which it never does.
	go func() {
		io.Copy(stdin, channel)
		stdin.Close()
	}()
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return uint32(exit.ExitCode())
		}
		return 1
	}
	return 0
}
