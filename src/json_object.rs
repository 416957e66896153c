//! A flat JSON object written field by field (strings through a SIMD escaper, integers
//! through itoa), for the two outputs written once per proxied call: the access-log line
//! and the store's captured messages. Strings are escaped byte for byte as `serde_json`
//! escapes them; callers' tests hold the output to serde_json's.

/// Writes one flat JSON object into `out`. Keys are the callers' constants (nothing to
/// escape).
pub struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonObject<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonObject { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string member; `None` is written as `null`.
    pub fn str(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => json_escape_simd::escape_into(v, self.out),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    pub fn int(&mut self, key: &str, value: usize) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A duration in milliseconds with three decimals (microsecond precision), e.g.
    /// `1630.125`; `null` for none. Integer formatting: a float's shortest form (ryu)
    /// cost half of an access-log line's instructions.
    pub fn millis(&mut self, key: &str, value: Option<std::time::Duration>) {
        self.key(key);
        let Some(d) = value else {
            self.out.extend_from_slice(b"null");
            return;
        };
        let micros = d.as_micros();
        let mut digits = itoa::Buffer::new();
        self.out
            .extend_from_slice(digits.format(micros / 1000).as_bytes());
        let frac = (micros % 1000) as u16;
        self.out.extend_from_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}
