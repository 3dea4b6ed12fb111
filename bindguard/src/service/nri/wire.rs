//! The bytes on the NRI socket: a connection multiplexer carrying two ttrpc streams.
//!
//! ```text
//! mux frame    conn id u32 BE | length u32 BE | length bytes of that connection's stream
//! ttrpc frame  length u32 BE | stream id u32 BE | type u8 | flags u8 | length bytes (protobuf)
//! ```
//!
//! Connection 1 carries the plugin's own service: the runtime sends requests (Configure,
//! Synchronize, CreateContainer, StateChange...) and the plugin answers. On connection 2 the
//! plugin is the client: it calls the runtime's `RegisterPlugin`. A mux frame holds whatever
//! the sender wrote in one go — part of a ttrpc message, or several — so each connection's
//! bytes are reassembled in a buffer of their own before ttrpc frames are cut from it.
//! Frames for other connection ids are dropped, as containerd/nri's mux does.
//!
//! Only framing lives here: no I/O, so every edge (split headers, oversized frames) is a unit
//! test.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The plugin's service (the runtime calls the plugin).
pub const PLUGIN_CONN: u32 = 1;
/// The runtime's service (the plugin calls the runtime).
pub const RUNTIME_CONN: u32 = 2;

const MUX_HEADER: usize = 8;
const TTRPC_HEADER: usize = 10;
/// ttrpc's own limit on a message.
pub const TTRPC_MAX: usize = 4 << 20;
/// containerd/nri's limit on one mux frame: a whole ttrpc message.
const MUX_MAX: usize = TTRPC_HEADER + TTRPC_MAX;

/// ttrpc message types.
pub const REQUEST: u8 = 1;
pub const RESPONSE: u8 = 2;

/// One ttrpc message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub stream: u32,
    pub kind: u8,
    pub flags: u8,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("the runtime sent a mux frame of {0} bytes, more than the {MUX_MAX} NRI allows")]
    MuxTooLarge(usize),
    #[error(
        "the runtime sent a ttrpc message of {0} bytes, more than the {TTRPC_MAX} ttrpc allows"
    )]
    TtrpcTooLarge(usize),
}

/// Cuts the trunk's bytes into mux frames and each connection's stream into ttrpc messages.
#[derive(Default)]
pub struct Demux {
    trunk: BytesMut,
    plugin: BytesMut,
    runtime: BytesMut,
}

impl Demux {
    /// Bytes as read from the socket.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.trunk.extend_from_slice(bytes);
    }

    /// The next complete ttrpc message, with the connection it came on.
    pub fn next_message(&mut self) -> Result<Option<(u32, Message)>, WireError> {
        self.split_frames()?;
        for (conn, buf) in [
            (PLUGIN_CONN, &mut self.plugin),
            (RUNTIME_CONN, &mut self.runtime),
        ] {
            if let Some(m) = cut_message(buf)? {
                return Ok(Some((conn, m)));
            }
        }
        Ok(None)
    }

    fn split_frames(&mut self) -> Result<(), WireError> {
        while self.trunk.len() >= MUX_HEADER {
            let mut hdr = &self.trunk[..MUX_HEADER];
            let conn = hdr.get_u32();
            let len = hdr.get_u32() as usize;
            if len > MUX_MAX {
                return Err(WireError::MuxTooLarge(len));
            }
            if self.trunk.len() < MUX_HEADER + len {
                self.trunk.reserve(MUX_HEADER + len - self.trunk.len());
                return Ok(());
            }
            self.trunk.advance(MUX_HEADER);
            let payload = self.trunk.split_to(len);
            match conn {
                PLUGIN_CONN => self.plugin.extend_from_slice(&payload),
                RUNTIME_CONN => self.runtime.extend_from_slice(&payload),
                _ => {}
            }
        }
        Ok(())
    }
}

fn cut_message(buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
    if buf.len() < TTRPC_HEADER {
        return Ok(None);
    }
    let mut hdr = &buf[..TTRPC_HEADER];
    let len = hdr.get_u32() as usize;
    let stream = hdr.get_u32();
    let kind = hdr.get_u8();
    let flags = hdr.get_u8();
    if len > TTRPC_MAX {
        return Err(WireError::TtrpcTooLarge(len));
    }
    if buf.len() < TTRPC_HEADER + len {
        return Ok(None);
    }
    buf.advance(TTRPC_HEADER);
    let payload = buf.split_to(len).freeze();
    Ok(Some(Message {
        stream,
        kind,
        flags,
        payload,
    }))
}

/// Appends `msg`, framed for connection `conn`, to `out`: one mux frame per ttrpc message
/// (a message is never larger than a mux frame may be).
pub fn encode(conn: u32, msg: &Message, out: &mut BytesMut) {
    out.reserve(MUX_HEADER + TTRPC_HEADER + msg.payload.len());
    out.put_u32(conn);
    out.put_u32((TTRPC_HEADER + msg.payload.len()) as u32);
    out.put_u32(msg.payload.len() as u32);
    out.put_u32(msg.stream);
    out.put_u8(msg.kind);
    out.put_u8(msg.flags);
    out.put_slice(&msg.payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(stream: u32, kind: u8, payload: &'static [u8]) -> Message {
        Message {
            stream,
            kind,
            flags: 0,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn a_message_round_trips_fed_byte_by_byte() {
        let mut out = BytesMut::new();
        encode(PLUGIN_CONN, &msg(3, REQUEST, b"hello"), &mut out);
        encode(RUNTIME_CONN, &msg(1, RESPONSE, b""), &mut out);
        assert_eq!(&out[..8], &[0, 0, 0, 1, 0, 0, 0, 15]);
        assert_eq!(&out[8..18], &[0, 0, 0, 5, 0, 0, 0, 3, 1, 0]);
        let mut d = Demux::default();
        let mut got = Vec::new();
        for b in out.iter() {
            d.feed(&[*b]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(
            got,
            [
                (PLUGIN_CONN, msg(3, REQUEST, b"hello")),
                (RUNTIME_CONN, msg(1, RESPONSE, b""))
            ]
        );
    }

    #[test]
    fn a_ttrpc_message_split_over_mux_frames_is_reassembled() {
        let mut one = BytesMut::new();
        encode(PLUGIN_CONN, &msg(5, REQUEST, b"abcdef"), &mut one);
        let ttrpc = &one[8..];
        let mut trunk = BytesMut::new();
        // header in one frame, payload in two; a frame of an unknown connection between
        for (conn, part) in [
            (1, &ttrpc[..10]),
            (7, &b"junk"[..]),
            (1, &ttrpc[10..13]),
            (1, &ttrpc[13..]),
        ] {
            trunk.put_u32(conn);
            trunk.put_u32(part.len() as u32);
            trunk.put_slice(part);
        }
        let mut d = Demux::default();
        d.feed(&trunk);
        assert_eq!(
            d.next_message().unwrap(),
            Some((PLUGIN_CONN, msg(5, REQUEST, b"abcdef")))
        );
        assert_eq!(d.next_message().unwrap(), None);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut d = Demux::default();
        d.feed(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_message(), Err(WireError::MuxTooLarge(_))));
        let mut d = Demux::default();
        d.feed(&[0, 0, 0, 1, 0, 0, 0, 10, 0x7f, 0, 0, 0, 0, 0, 0, 1, 1, 0]);
        assert!(matches!(d.next_message(), Err(WireError::TtrpcTooLarge(_))));
    }
}
