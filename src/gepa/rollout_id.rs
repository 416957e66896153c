//! Self-verifying rollout ids.
//!
//! A rollout id goes out in a response header the moment a call is answered, but the
//! rollout's record reaches the disk a few milliseconds later (write-behind). So that a
//! crash in between cannot turn a genuine reward into a 404, an id carries what a reward
//! needs (the candidate that served it, by its position in the session) and a MAC under a
//! key kept in the store: the gateway recognises its own ids without any record.
//!
//! Format: `ro_<32 hex nonce>_<candidate position>_<16 hex MAC>`; the MAC (keyed BLAKE3,
//! 64 bits) covers the session id, the nonce and the position. The nonce is a millisecond
//! timestamp followed by 80 random bits.

use crate::format::push_hex;

/// A fresh id for a rollout of `session_id` served by the candidate at `position`.
pub fn issue(key: &[u8; 32], session_id: &str, position: usize) -> String {
    // Time-ordered like a UUIDv7 (48-bit milliseconds, then 80 random bits): ids of one
    // session sort by creation, so the store's primary-key index grows at its end instead
    // of dirtying a random page per rollout.
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    let nonce = (u128::from(millis & 0xffff_ffff_ffff) << 80) | random;
    let mut id = String::with_capacity(64);
    id.push_str("ro_");
    push_hex(&mut id, &nonce.to_be_bytes());
    let nonce_hex = &id[3..];
    let tag = mac(key, session_id, nonce_hex, position);
    id.push('_');
    id.push_str(itoa::Buffer::new().format(position));
    id.push('_');
    push_hex(&mut id, &tag);
    id
}

/// The candidate position an id names, if the id is one this key issued for this session.
pub fn verify(key: &[u8; 32], session_id: &str, id: &str) -> Option<usize> {
    let rest = id.strip_prefix("ro_")?;
    let mut parts = rest.splitn(3, '_');
    let (nonce, position, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // One spelling per rollout: digits only (`parse` would also accept a leading '+') and
    // no leading zero, since the MAC covers the number, not its text, and a second
    // spelling of the same rollout would be a second rollout to the store.
    let canonical = !position.is_empty()
        && position.len() <= 6
        && position.bytes().all(|b| b.is_ascii_digit())
        && (position == "0" || !position.starts_with('0'));
    if !canonical {
        return None;
    }
    let position: usize = position.parse().ok()?;
    let mut expected = String::with_capacity(16);
    push_hex(&mut expected, &mac(key, session_id, nonce, position));
    // Constant time, so the MAC cannot be guessed byte by byte from response timing.
    use subtle::ConstantTimeEq;
    bool::from(expected.as_bytes().ct_eq(tag.as_bytes())).then_some(position)
}

fn mac(key: &[u8; 32], session_id: &str, nonce: &str, position: usize) -> [u8; 8] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(session_id.as_bytes());
    h.update(b"\0");
    h.update(nonce.as_bytes());
    h.update(b"\0");
    h.update(&(position as u64).to_le_bytes());
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&h.finalize().as_bytes()[..8]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn issued_ids_verify_and_name_their_candidate() {
        for position in [0, 1, 31, 999] {
            let id = issue(&KEY, "sess", position);
            assert!(id.starts_with("ro_"), "{id}");
            assert_eq!(verify(&KEY, "sess", &id), Some(position));
        }
        let a = issue(&KEY, "sess", 0);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = issue(&KEY, "sess", 0);
        assert_ne!(a, b, "every id is fresh");
        assert!(a < b, "ids sort by creation: {a} {b}");
    }

    #[test]
    fn an_id_issued_before_this_build_still_verifies() {
        // Pinned bytes: a change to the id's text (hex, MAC input) would orphan the
        // rewards of every rollout already handed out.
        let id = "ro_0193a1b2c3d4e5f60718293a4b5c6d7e_2_f9be87c249bdb6e8";
        assert_eq!(verify(&KEY, "sess", id), Some(2));
    }

    #[test]
    fn forged_or_foreign_ids_do_not_verify() {
        let id = issue(&KEY, "sess", 3);
        assert_eq!(verify(&[8; 32], "sess", &id), None, "another key");
        assert_eq!(verify(&KEY, "other", &id), None, "another session");
        let moved = id.replacen("_3_", "_4_", 1);
        assert_eq!(verify(&KEY, "sess", &moved), None, "another candidate");
        let plus = id.replacen("_3_", "_+3_", 1);
        assert_eq!(verify(&KEY, "sess", &plus), None);
        for padded in ["_03_", "_003_"] {
            let other_spelling = id.replacen("_3_", padded, 1);
            assert_eq!(verify(&KEY, "sess", &other_spelling), None, "{padded}");
        }
        let zero = issue(&KEY, "sess", 0);
        assert_eq!(verify(&KEY, "sess", &zero), Some(0));
        assert_eq!(verify(&KEY, "sess", &zero.replacen("_0_", "_00_", 1)), None);
        let mut flipped = id.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(verify(&KEY, "sess", &flipped), None, "a changed MAC");
        for junk in [
            "",
            "ro_",
            "ro_x_1_y",
            "ro_0123456789abcdef0123456789abcdef_1_",
        ] {
            assert_eq!(verify(&KEY, "sess", junk), None, "{junk:?}");
        }
        // The pre-MAC format (`ro_` + 32 hex) is not self-verifying.
        assert_eq!(
            verify(&KEY, "sess", "ro_0123456789abcdef0123456789abcdef"),
            None
        );
    }
}
