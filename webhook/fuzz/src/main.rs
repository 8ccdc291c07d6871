//! A mutation fuzzer for what the webhook reads from the network before it
//! trusts anything: the `Saleor-Signature` header, the JWS check, the order
//! payload and the order → CR mapping. `cargo xtask fuzz-webhook` runs it in
//! release mode: an equivalent of `cargo fuzz` that needs no nightly
//! features and no coverage instrumentation.
//!
//! Inputs are the recorded payloads of `examples/saleor/` and signature
//! headers, mutated (bit flips, interesting bytes, insertions, deletions,
//! splices, JSON tokens, deep nesting, truncation). Every input runs under
//! `catch_unwind`, and a counting allocator records the peak bytes each call
//! holds: a panic, or a peak above `64 × input + 1 MiB`, fails the run and
//! writes the input to `$TMPDIR/cmp-fuzz-failures/`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use cmp_webhook::catalog::{Catalog, CreditPack};
use cmp_webhook::order_crs;
use cmp_webhook::payload::{OrderEvent, parse_order};
use cmp_webhook::signature::{self, Jwks, Signature};

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// Counts the bytes each thread holds, and its peak.
struct Counting;

#[allow(unsafe_code)] // a GlobalAlloc is unsafe by definition; it only counts and defers to System
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.with(|h| {
            let now = h.get() + layout.size();
            h.set(now);
            PEAK.with(|p| p.set(p.get().max(now)));
        });
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.with(|h| h.set(h.get().saturating_sub(layout.size())));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes held at the peak of `f`, above what was held before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = HELD.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let out = f();
    (out, PEAK.with(Cell::get).saturating_sub(before))
}

/// xorshift64*: deterministic, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING: &[u8] = b"{}[]\":,\\0-1e9.\x00\xff\xc3\x28 \n\ttrufalsn";
const TOKENS: &[&str] = &[
    "{\"order\": ",
    "\"lines\": [",
    "{\"id\": \"L\", \"quantity\": 99999999999999999999, \"productSku\": \"CREDITS-1000\"}",
    "\"user\": {\"id\": ",
    "null",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "{\"data\": {\"orderFullyPaid\": ",
    "\"\\ud800\"",
    "-9223372036854775808",
    "..",
    "eyJhbGciOiJSUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il0sImtpZCI6ImsifQ",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(64)).min(len);
                input.drain(from..to);
            }
            4 if len > 0 => input.truncate(rng.below(len)),
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let to = (from + 1 + rng.below(256)).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[from..to].iter().copied());
                }
            }
            6 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(32)).min(len);
                let copy = input[from..to].to_vec();
                input.splice(to..to, copy);
            }
            _ => input.push(rng.next() as u8),
        }
    }
    input.truncate(256 * 1024);
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = manifest_dir().join("../../examples/saleor");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    seeds.push(b"eyJhbGciOiJSUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il0sImtpZCI6ImsifQ..c2lnbmF0dXJl".to_vec());
    seeds.push(b"3f5a0c1f6a8b2e4d9c7b1a0e5f3d2c1b4a6e8d0f2c4b6a8e0d2f4c6b8a0e2d4f".to_vec());
    seeds.push(b"{\"order\": {\"id\": \"O1\", \"lines\": []}}".to_vec());
    seeds
}

/// How far inputs got, to show the fuzzer reaches past the first error.
#[derive(Default)]
struct Reached {
    signatures: AtomicU64,
    orders: AtomicU64,
}

/// Runs every parser on one input; returns the largest peak any of them held.
fn run_one(input: &[u8], event: OrderEvent, catalog: &Catalog, jwks: &Jwks, reached: &Reached) -> usize {
    let text = String::from_utf8_lossy(input);
    let (parsed, peak_signature) = peak_of(|| signature::parse(Some(&text)));
    if parsed.is_ok() {
        reached.signatures.fetch_add(1, Ordering::Relaxed);
    }
    let (_, peak_check) = peak_of(|| match parsed {
        Ok(Signature::Jws { header, encoded_header, signature }) => {
            let _ = signature::verify_jws(&header, &encoded_header, &signature, input, jwks);
        }
        Ok(Signature::Hmac(tag)) => {
            let _ = signature::verify_hmac(&tag, input, Some(b"secret"));
        }
        Err(_) => {}
    });
    let (order, peak_payload) = peak_of(|| parse_order(event, input));
    if order.is_ok() {
        reached.orders.fetch_add(1, Ordering::Relaxed);
    }
    let (_, peak_mapping) =
        peak_of(|| order.map(|o| order_crs::order_crs("https://store.example.com/graphql/", &o, catalog)));
    peak_signature.max(peak_check).max(peak_payload).max(peak_mapping)
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut inputs: u64 = 10_000_000;
    let mut seed: u64 = 0x00C0_FFEE;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse::<u64>().ok())) {
            ("--inputs", Some(n)) => inputs = n,
            ("--seed", Some(s)) => seed = s.max(1),
            _ => {
                eprintln!("usage: fuzz-webhook-parsers [--inputs N] [--seed S]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    std::panic::set_hook(Box::new(|_| {})); // panics are counted and reported below, not printed per input
    let seeds = Arc::new(seeds());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let worst_ratio = Arc::new(AtomicU64::new(0));
    let reached = Arc::new(Reached::default());
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (seeds, done, failures, worst_ratio) =
                (seeds.clone(), done.clone(), failures.clone(), worst_ratio.clone());
            let reached = reached.clone();
            std::thread::spawn(move || {
                let catalog =
                    Catalog::new(&[], &[CreditPack { sku: "CREDITS-1000".into(), credits: 1000, display_name: None }]);
                let jwks = Jwks::default();
                let mut rng = Rng(seed.wrapping_add(t.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
                let share = inputs / threads + u64::from(t < inputs % threads);
                let mut input = Vec::new();
                for i in 0..share {
                    // Mostly fresh mutations of a seed (to get past the first
                    // check), sometimes a mutation of the last input (to go deep).
                    if i % 8 != 0 || input.is_empty() {
                        input = seeds[rng.below(seeds.len())].clone();
                    }
                    mutate(&mut rng, &seeds, &mut input);
                    let event = OrderEvent::ALL[rng.below(OrderEvent::ALL.len())];
                    let outcome = std::panic::catch_unwind(|| run_one(&input, event, &catalog, &jwks, &reached));
                    let limit = 64 * input.len() + (1 << 20);
                    let failed = match outcome {
                        Ok(peak) => {
                            worst_ratio.fetch_max((peak as u64 * 100) / (input.len() as u64 + 1), Ordering::Relaxed);
                            peak > limit
                        }
                        Err(_) => true,
                    };
                    if failed {
                        let n = failures.fetch_add(1, Ordering::Relaxed);
                        let dir = std::env::temp_dir().join("cmp-fuzz-failures");
                        let _ = std::fs::create_dir_all(&dir);
                        let _ = std::fs::write(dir.join(format!("input-{t}-{i}-{n}.bin")), &input);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (done, failures) = (done.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    println!(
        "fuzz-webhook-parsers: {done} inputs in {elapsed:.1} s ({:.0}/s, {threads} threads, seed {seed}): {failures} failures (panics or allocations above 64 x input + 1 MiB); {} parsed as a signature header, {} as an order; worst peak allocation {:.1} x input",
        done as f64 / elapsed,
        reached.signatures.load(Ordering::Relaxed),
        reached.orders.load(Ordering::Relaxed),
        worst_ratio.load(Ordering::Relaxed) as f64 / 100.0
    );
    if failures == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

/// This package's directory, as cargo gives it to the running program (a
/// path compiled in may name another checkout: cargo reuses artefacts across
/// checkouts that share a target directory).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
