//! RESP2 for the read path: commands encoded straight into one buffer, and replies parsed
//! in place into byte ranges of the receive buffer (no allocation per value).
//!
//! Only what online reads need: arrays of bulk strings (`HMGET`, `HGETALL`), simple
//! strings and integers (handshake), and errors. RESP3 is never asked for (no `HELLO 3`).

use std::ops::Range;

/// Commands to send in one round trip, encoded as RESP arrays of bulk strings.
#[derive(Debug, Default)]
pub(super) struct Commands {
    buf: Vec<u8>,
    count: usize,
}

impl Commands {
    pub fn with_capacity(bytes: usize) -> Self {
        Commands {
            buf: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Starts a command of `args` arguments (the name included); exactly that many
    /// [`arg`](Self::arg) calls must follow.
    pub fn command(&mut self, args: usize) -> &mut Self {
        self.count += 1;
        self.buf.push(b'*');
        push_decimal(&mut self.buf, args);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    pub fn arg(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.push(b'$');
        push_decimal(&mut self.buf, bytes.len());
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(bytes);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// One argument made of two parts (a Redis key: entity key then project), without
    /// joining them first.
    pub fn arg2(&mut self, head: &[u8], tail: &[u8]) -> &mut Self {
        self.buf.push(b'$');
        push_decimal(&mut self.buf, head.len() + tail.len());
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(tail);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

fn push_decimal(buf: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// One parsed reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// `+OK`, or an integer, or a bulk string (as a range of the buffer); handshake answers.
    Scalar,
    /// An array of bulk strings or nulls: `items[first..first + len]` of [`Replies`].
    Array { first: usize, len: usize },
    /// A null array or null bulk string.
    Nil,
    /// `-ERR ...`: the server's message (range of the buffer).
    Error(Range<usize>),
}

/// Where parsing stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parse {
    /// All expected replies are in.
    Done,
    /// The buffer ends inside a reply: read more and call again.
    More,
}

/// Replies parsed from a receive buffer, resumable: a reply cut by the end of the buffer is
/// parsed again from its start once more bytes arrived.
#[derive(Debug, Default)]
pub(super) struct Replies {
    /// Where the next unparsed reply starts.
    pos: usize,
    pub replies: Vec<Reply>,
    /// Array items: `Some(range)` of a bulk string, `None` for a null.
    pub items: Vec<Option<Range<usize>>>,
}

/// A malformed reply (a protocol error: the connection must be dropped).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed(pub String);

impl Replies {
    /// Parses the replies of `buf` from where the last call stopped, until `expected`
    /// replies are in or the buffer ends inside one; bytes after the last are an error.
    pub fn parse(&mut self, buf: &[u8], expected: usize) -> Result<Parse, Malformed> {
        let parse = self.parse_some(buf, expected)?;
        if parse == Parse::Done && self.pos != buf.len() {
            return Err(Malformed(format!(
                "{} bytes after the last expected reply",
                buf.len() - self.pos
            )));
        }
        Ok(parse)
    }

    /// [`parse`](Self::parse), leaving any bytes after the last expected reply (the replies
    /// of later commands) unread: they start at [`consumed`](Self::consumed).
    pub fn parse_some(&mut self, buf: &[u8], expected: usize) -> Result<Parse, Malformed> {
        while self.replies.len() < expected {
            let items_before = self.items.len();
            match parse_reply(buf, self.pos, &mut self.items)? {
                Some((reply, next)) => {
                    self.replies.push(reply);
                    self.pos = next;
                }
                None => {
                    self.items.truncate(items_before);
                    return Ok(Parse::More);
                }
            }
        }
        Ok(Parse::Done)
    }

    /// The bytes of the replies parsed so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Empty replies with room for as many replies and items as these hold.
    pub fn with_room_alike(&self) -> Self {
        Replies {
            pos: 0,
            replies: Vec::with_capacity(self.replies.len()),
            items: Vec::with_capacity(self.items.len()),
        }
    }
}

/// The line starting at `at` (without `\r\n`) and where the next one starts; None when the
/// buffer ends first.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

/// The decimal integer `digits` (an optional `-`, then at least one digit), parsed by hand:
/// lengths come before every reply and every bulk string, and `str::parse` after a UTF-8
/// check cost several times as much.
fn number(digits: &[u8], what: char) -> Result<i64, Malformed> {
    let (negative, body) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    let mut value: i64 = 0;
    let mut ok = !body.is_empty();
    for &b in body {
        let digit = b.wrapping_sub(b'0');
        match value.checked_mul(10).and_then(|v| {
            if negative {
                v.checked_sub(i64::from(digit))
            } else {
                v.checked_add(i64::from(digit))
            }
        }) {
            Some(next) if digit < 10 => value = next,
            _ => {
                ok = false;
                break;
            }
        }
    }
    if ok {
        return Ok(value);
    }
    Err(Malformed(format!(
        "bad length or integer after `{what}`: {:?}",
        String::from_utf8_lossy(digits)
    )))
}

/// A bulk string's body at `at` of `len` bytes; None when incomplete.
fn bulk(buf: &[u8], at: usize, len: usize) -> Result<Option<(Range<usize>, usize)>, Malformed> {
    let end = at + len;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(Malformed("a bulk string does not end in CRLF".to_owned()));
    }
    Ok(Some((at..end, end + 2)))
}

/// One top-level reply at `at`: the reply and where the next starts, or None when the
/// buffer ends inside it (items pushed so far are then discarded by the caller).
fn parse_reply(
    buf: &[u8],
    at: usize,
    items: &mut Vec<Option<Range<usize>>>,
) -> Result<Option<(Reply, usize)>, Malformed> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    match kind {
        b'+' | b':' => Ok(Some((Reply::Scalar, next))),
        b'-' => Ok(Some((Reply::Error(at + 1..at + 1 + head.len()), next))),
        b'$' => match number(head, '$')? {
            -1 => Ok(Some((Reply::Nil, next))),
            len if len >= 0 => Ok(bulk(buf, next, len as usize)?.map(|(_, n)| (Reply::Scalar, n))),
            len => Err(Malformed(format!("bulk string of length {len}"))),
        },
        b'*' => {
            let len = number(head, '*')?;
            if len == -1 {
                return Ok(Some((Reply::Nil, next)));
            }
            let len =
                usize::try_from(len).map_err(|_| Malformed(format!("array of length {len}")))?;
            let first = items.len();
            let mut pos = next;
            for _ in 0..len {
                let Some(&item_kind) = buf.get(pos) else {
                    return Ok(None);
                };
                let Some((item_head, item_next)) = line(buf, pos + 1) else {
                    return Ok(None);
                };
                if item_kind != b'$' {
                    return Err(Malformed(format!(
                        "an array item of type `{}` where bulk strings were expected",
                        item_kind as char
                    )));
                }
                match number(item_head, '$')? {
                    -1 => {
                        items.push(None);
                        pos = item_next;
                    }
                    n if n >= 0 => match bulk(buf, item_next, n as usize)? {
                        Some((range, after)) => {
                            items.push(Some(range));
                            pos = after;
                        }
                        None => return Ok(None),
                    },
                    n => return Err(Malformed(format!("bulk string of length {n}"))),
                }
            }
            Ok(Some((Reply::Array { first, len }, pos)))
        }
        other => Err(Malformed(format!(
            "a reply starting with byte {other:#04x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut c = Commands::default();
        c.command(3).arg(b"HMGET").arg2(b"k\x00", b"proj").arg(b"");
        c.command(1).arg(b"PING");
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.bytes(),
            b"*3\r\n$5\r\nHMGET\r\n$6\r\nk\x00proj\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n"
        );
        let mut long = Commands::default();
        long.command(1).arg(&[7u8; 1234]);
        assert!(long.bytes().starts_with(b"*1\r\n$1234\r\n"));
    }

    const REPLIES: &[u8] =
        b"*3\r\n$2\r\nab\r\n$-1\r\n$0\r\n\r\n+OK\r\n:12\r\n-WRONGTYPE no\r\n*0\r\n$-1\r\n*-1\r\n";

    fn check(r: &Replies, buf: &[u8]) {
        assert_eq!(
            r.replies,
            vec![
                Reply::Array { first: 0, len: 3 },
                Reply::Scalar,
                Reply::Scalar,
                Reply::Error(34..46),
                Reply::Array { first: 3, len: 0 },
                Reply::Nil,
                Reply::Nil,
            ]
        );
        let item = |i: usize| r.items[i].clone().map(|range| &buf[range]);
        assert_eq!(item(0), Some(&b"ab"[..]));
        assert_eq!(item(1), None);
        assert_eq!(item(2), Some(&b""[..]));
        assert_eq!(&buf[34..46], b"WRONGTYPE no");
    }

    #[test]
    fn parses_every_reply_kind() {
        let mut r = Replies::default();
        assert_eq!(r.parse(REPLIES, 7), Ok(Parse::Done));
        check(&r, REPLIES);
    }

    /// Every cut of the stream, resumed: the same replies as parsing it whole.
    #[test]
    fn resumes_at_every_cut() {
        for cut in 0..REPLIES.len() {
            let mut r = Replies::default();
            let first = r.parse(&REPLIES[..cut], 7).expect("prefix parses");
            assert_eq!(first, Parse::More, "cut at {cut}");
            assert_eq!(r.parse(REPLIES, 7), Ok(Parse::Done), "cut at {cut}");
            check(&r, REPLIES);
        }
    }

    /// `parse_some` stops after the replies asked for; the next request's parse starts
    /// where it stopped.
    #[test]
    fn parses_some_replies_and_leaves_the_rest() {
        let mut first = Replies::default();
        assert_eq!(first.parse_some(REPLIES, 2), Ok(Parse::Done));
        assert_eq!(
            first.replies,
            vec![Reply::Array { first: 0, len: 3 }, Reply::Scalar]
        );
        let rest = &REPLIES[first.consumed()..];
        assert!(rest.starts_with(b":12\r\n"));
        let mut second = Replies::default();
        assert_eq!(second.parse_some(rest, 5), Ok(Parse::Done));
        assert_eq!(second.consumed(), rest.len());
        assert_eq!(second.replies[1], Reply::Error(6..18));
        assert_eq!(&rest[6..18], b"WRONGTYPE no");
        // Bytes after the expected replies are an error only for `parse`.
        assert!(Replies::default().parse(REPLIES, 2).is_err());
    }

    #[test]
    fn rejects_malformed_replies() {
        let cases: &[&[u8]] = &[
            b"?x\r\n",
            b"*1\r\n:3\r\n",
            b"$abc\r\n",
            b"$2\r\nabcd\r\n",
            b"*-2\r\n",
            b"+OK\r\n+OK\r\n",
        ];
        for case in cases {
            let mut r = Replies::default();
            assert!(
                r.parse(case, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    /// Lengths as RESP writes them; a `+` sign, which `str::parse` takes, RESP never sends.
    #[test]
    fn numbers_parse_as_resp_writes_them() {
        let good: &[&[u8]] = &[
            b"0",
            b"7",
            b"-1",
            b"1234",
            b"-0",
            b"9223372036854775807",
            b"-9223372036854775808",
        ];
        for digits in good {
            let expected: i64 = std::str::from_utf8(digits).unwrap().parse().unwrap();
            assert_eq!(number(digits, '$'), Ok(expected));
        }
        let bad: &[&[u8]] = &[
            b"",
            b"-",
            b"+1",
            b"1a",
            b" 1",
            b"--1",
            b"1-",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"\xff",
        ];
        for digits in bad {
            let err = number(digits, '*').unwrap_err();
            assert!(
                err.0.starts_with("bad length or integer after `*`"),
                "{err:?}"
            );
        }
    }
}
