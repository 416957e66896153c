//! A flat JSON object written field by field, byte for byte as `serde_json` writes the
//! same fields (strings through a SIMD escaper, numbers through itoa and ryu), for the
//! two outputs written once per proxied call: the access-log line and the store's
//! captured messages. Callers' tests hold the output to serde_json's.

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

    /// As serde_json: the shortest round-trip form, `null` for NaN and infinities.
    pub fn float(&mut self, key: &str, value: Option<f64>) {
        self.key(key);
        match value {
            Some(v) if v.is_finite() => self
                .out
                .extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes()),
            _ => self.out.extend_from_slice(b"null"),
        }
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}
