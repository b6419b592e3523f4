//! Attribute keys, interned. The same few hundred keys (`http.route`, `service.name` …) repeat
//! in nearly every span; a `String` per attribute made each of them an allocation at decode,
//! heap the head had to hold, and a free when the head was written out. A `Key` made through
//! `Key::new` (or `From`) shares one process-wide copy of its text instead.
//!
//! The interner never frees, so it is bounded: past `MAX_INTERNED_KEYS` keys or
//! `MAX_INTERNED_BYTES` of text (high-cardinality keys, say ones with ids in them), new keys are
//! owned by their attribute as before. Lookups go to a per-thread cache first, so decoding on
//! several threads does not contend on the shared set.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

/// Distinct keys the process interns at most (~16 B of set per key, plus its text).
pub const MAX_INTERNED_KEYS: usize = 16_384;
/// Key text the process interns at most.
pub const MAX_INTERNED_BYTES: usize = 1 << 20;
/// Longer keys are not interned (they are owned): keys are interned as they are decoded,
/// before ingest limits drop the attributes of keys too long, and a few long keys would
/// otherwise fill the interner's bytes for the rest of the process.
pub const MAX_INTERNED_KEY_LENGTH: usize = 256;

/// An attribute key: interned text shared by every attribute with that key, or its own copy
/// once the interner is full. Compares, hashes and orders as its text.
#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    Interned(&'static str),
    Owned(Box<str>),
}

struct Interned {
    keys: HashSet<&'static str>,
    bytes: usize,
}

static INTERNED: LazyLock<Mutex<Interned>> = LazyLock::new(|| {
    Mutex::new(Interned {
        keys: HashSet::new(),
        bytes: 0,
    })
});
/// Set once the shared set is at its bound, so later misses skip its lock.
static FULL: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's view of `INTERNED`: only keys already there.
    static CACHE: RefCell<HashSet<&'static str>> = RefCell::new(HashSet::new());
    /// Keys this thread met lately, one per slot of a small table, checked before anything else.
    static RECENT: RefCell<[&'static str; RECENT_SLOTS]> = const { RefCell::new([""; RECENT_SLOTS]) };
}

const RECENT_SLOTS: usize = 256;

/// A slot for `bytes` from its length and three of its bytes: cheap, and a collision only
/// costs a normal lookup, so crafted keys can slow nothing down.
fn recent_slot(bytes: &[u8]) -> usize {
    let n = bytes.len();
    let mix = n.wrapping_mul(0x9e37)
        ^ usize::from(bytes[0]) << 3
        ^ usize::from(bytes[n / 2]) << 5
        ^ usize::from(bytes[n - 1]);
    mix % RECENT_SLOTS
}

impl Key {
    /// The key `text`, interned when there is room.
    pub fn new(text: &str) -> Key {
        Key::of(text, intern(text))
    }

    /// The key whose text is `bytes`, or `None` if they are not UTF-8. Decoders call this with
    /// wire bytes: a key met lately is found by comparing bytes, before any UTF-8 check.
    pub fn from_utf8(bytes: &[u8]) -> Option<Key> {
        match recent(bytes) {
            Some(k) => Some(Key(Repr::Interned(k))),
            None => std::str::from_utf8(bytes)
                .ok()
                .map(|text| Key::of(text, intern_not_recent(text))),
        }
    }

    /// `text` as its interned copy when it has one, else owned.
    fn of(text: &str, interned: Option<&'static str>) -> Key {
        match interned {
            Some(k) => Key(Repr::Interned(k)),
            None => Key(Repr::Owned(text.into())),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Interned(s) => s,
            Repr::Owned(s) => s,
        }
    }

    /// Where an interned key's shared text lives. Two keys that both have an address are equal
    /// exactly when their addresses are, so a map by address can stand in for one by text.
    pub fn interned_addr(&self) -> Option<usize> {
        match &self.0 {
            Repr::Interned(s) => Some(s.as_ptr() as usize),
            Repr::Owned(_) => None,
        }
    }

    /// Heap bytes this key holds on its own (nothing when interned).
    pub fn heap_size(&self) -> usize {
        match &self.0 {
            Repr::Interned(_) => 0,
            Repr::Owned(s) => s.len() + 16,
        }
    }
}

/// The interned key with text `bytes` if this thread met it lately: one byte comparison, no
/// hash (keys recur span after span, in the same order).
fn recent(bytes: &[u8]) -> Option<&'static str> {
    if bytes.is_empty() {
        return Some("");
    }
    let seen = RECENT.with_borrow(|r| r[recent_slot(bytes)]);
    (seen.as_bytes() == bytes).then_some(seen)
}

/// The process-wide copy of `text`, if it has one or there is room to make it.
fn intern(text: &str) -> Option<&'static str> {
    recent(text.as_bytes()).or_else(|| intern_not_recent(text))
}

/// `intern` for a key already looked for among the recent ones: remembered there once found.
fn intern_not_recent(text: &str) -> Option<&'static str> {
    let k = intern_shared(text)?;
    RECENT.with_borrow_mut(|r| r[recent_slot(text.as_bytes())] = k);
    Some(k)
}

/// `intern` past the table of recent keys: this thread's cache, then the shared set.
fn intern_shared(text: &str) -> Option<&'static str> {
    if text.len() > MAX_INTERNED_KEY_LENGTH {
        return None;
    }
    if let Some(k) = CACHE.with_borrow(|c| c.get(text).copied()) {
        return Some(k);
    }
    if FULL.load(Ordering::Relaxed) {
        return None;
    }
    let k = {
        let mut shared = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
        match shared.keys.get(text) {
            Some(k) => *k,
            None if shared.keys.len() >= MAX_INTERNED_KEYS || shared.bytes + text.len() > MAX_INTERNED_BYTES => {
                FULL.store(true, Ordering::Relaxed);
                return None;
            }
            None => {
                let k: &'static str = Box::leak(text.into());
                shared.keys.insert(k);
                shared.bytes += k.len();
                k
            }
        }
    };
    CACHE.with_borrow_mut(|c| c.insert(k));
    Some(k)
}

impl Default for Key {
    fn default() -> Key {
        Key(Repr::Interned(""))
    }
}

impl Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        match (&self.0, &other.0) {
            // One copy per text: the same pointer or different text.
            (Repr::Interned(a), Repr::Interned(b)) => std::ptr::eq(*a, *b),
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for Key {}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Key {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Key {
        Key::new(text)
    }
}

impl From<&String> for Key {
    fn from(text: &String) -> Key {
        Key::new(text)
    }
}

impl From<String> for Key {
    fn from(text: String) -> Key {
        match intern(&text) {
            Some(k) => Key(Repr::Interned(k)),
            None => Key(Repr::Owned(text.into_boxed_str())),
        }
    }
}

impl From<Key> for String {
    fn from(key: Key) -> String {
        match key.0 {
            Repr::Interned(s) => s.to_owned(),
            Repr::Owned(s) => s.into_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_copy_and_compare_as_text() {
        let a = Key::new("http.route");
        let b = Key::from(String::from("http.route"));
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()), "interned once");
        assert_eq!(a.heap_size(), 0);
        assert_eq!(a.interned_addr(), b.interned_addr());
        assert_ne!(a.interned_addr(), Key::new("http.method").interned_addr());
        assert_eq!(a, "http.route");
        assert_ne!(a, Key::new("http.method"));
        let owned = Key(Repr::Owned("http.route".into()));
        assert_eq!(owned, a, "an owned key equals the interned one with its text");
        let hash = |k: &Key| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            k.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&owned), hash(&a));
        let set: HashSet<Key> = [a.clone()].into();
        assert!(set.contains("http.route"), "Borrow<str> agrees with Hash and Eq");
    }

    #[test]
    fn keys_from_wire_bytes_are_checked_and_shared() {
        let a = Key::from_utf8(b"db.statement").unwrap();
        let b = Key::from_utf8(b"db.statement").unwrap();
        assert_eq!(a.interned_addr(), Key::new("db.statement").interned_addr());
        assert_eq!(a.interned_addr(), b.interned_addr());
        assert_eq!(Key::from_utf8(b"").unwrap(), "");
        assert!(Key::from_utf8(b"db.\xff").is_none(), "not UTF-8");
        // Keys sharing a slot (same length, same first, middle and last byte) still differ.
        let x = Key::from_utf8(b"a.xy.b").unwrap();
        let y = Key::from_utf8(b"a.zy.b").unwrap();
        assert_eq!((x.as_str(), y.as_str()), ("a.xy.b", "a.zy.b"));
        assert_eq!(Key::from_utf8(b"a.xy.b").unwrap(), x);
    }

    #[test]
    fn long_keys_are_owned_and_leave_the_interner_open() {
        for i in 0..8 {
            let long = format!("{i}{}", "k".repeat(200_000));
            assert_eq!(Key::from_utf8(long.as_bytes()).unwrap().interned_addr(), None);
            assert_eq!(Key::new(long.as_str()).as_str(), long);
        }
        // 1.6 MB of long keys later, a new short key is still interned.
        let short = Key::from_utf8(b"app.after.long.keys").unwrap();
        assert!(short.interned_addr().is_some());
        assert_eq!(short.interned_addr(), Key::new("app.after.long.keys").interned_addr());
    }

    #[test]
    fn other_threads_find_the_same_copy() {
        let here = Key::new("app.thread.test");
        let there = std::thread::spawn(|| Key::new("app.thread.test")).join().unwrap();
        assert!(std::ptr::eq(here.as_str(), there.as_str()));
    }
}
