//! A small PNG writer for the RGB buffers that plotters' `BitMapBackend` draws
//! into, and an atomic file write.
//!
//! Encoding ourselves (zlib via `flate2`, CRC-32 below) rather than letting
//! the backend save the file means the output is a PNG whatever the path's
//! extension, and the file appears at its final path only once complete: a
//! dashboard that re-reads a chart while it is being redrawn never sees half
//! an image.

use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The eight bytes every PNG file starts with.
pub(crate) const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// CRC-32 (ISO 3309, polynomial 0xEDB88320) lookup table, as PNG chunks use.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for part in parts {
        for &b in *part {
            c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
    }
    c ^ 0xFFFF_FFFF
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Chunks here are at most a few MiB (a 1200x2400 RGB image compresses to
    // far less than 4 GiB), so the length always fits the u32 field.
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

/// Encodes an 8-bit RGB image (`rgb.len() == width * height * 3`, rows top to
/// bottom) as a PNG file. Each row uses the "Up" filter (difference to the row
/// above), which suits charts: long vertical runs of equal colour become
/// zeros that deflate compresses well.
pub(crate) fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> io::Result<Vec<u8>> {
    let stride = width as usize * 3;
    if width == 0 || height == 0 || rgb.len() != stride * height as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "internal error: {} bytes do not form a {width}x{height} RGB image",
                rgb.len()
            ),
        ));
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);

    let mut z = ZlibEncoder::new(Vec::with_capacity(rgb.len() / 8), Compression::default());
    let mut row = vec![0u8; stride + 1];
    let mut prev: Option<&[u8]> = None;
    for line in rgb.chunks_exact(stride) {
        match prev {
            None => {
                row[0] = 0; // filter "None"
                row[1..].copy_from_slice(line);
            }
            Some(above) => {
                row[0] = 2; // filter "Up"
                for ((dst, &cur), &up) in row[1..].iter_mut().zip(line).zip(above) {
                    *dst = cur.wrapping_sub(up);
                }
            }
        }
        z.write_all(&row)?;
        prev = Some(line);
    }
    let idat = z.finish()?;

    let mut out = Vec::with_capacity(idat.len() + 64);
    out.extend_from_slice(&SIGNATURE);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`, creating missing parent directories first.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let result = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_known_value() {
        // CRC-32 of "123456789" is the standard check value.
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        // The IEND chunk's CRC is fixed by the format.
        assert_eq!(crc32(&[b"IEND"]), 0xAE42_6082);
    }

    #[test]
    fn rejects_mismatched_buffer() {
        assert!(encode_rgb(2, 2, &[0; 11]).is_err());
        assert!(encode_rgb(0, 2, &[]).is_err());
    }

    #[test]
    fn encodes_header_and_round_trips() {
        use std::io::Read;
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7) as u8).collect();
        let png = encode_rgb(4, 3, &rgb).unwrap();
        assert_eq!(png[..8], SIGNATURE);
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 4);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 3);
        // Decode the single IDAT chunk and undo the filters.
        let idat_len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&png[41..41 + idat_len])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), 3 * (1 + 12));
        let mut decoded: Vec<u8> = Vec::new();
        for (y, row) in raw.chunks_exact(13).enumerate() {
            for (x, &b) in row[1..].iter().enumerate() {
                let up = if y == 0 { 0 } else { decoded[(y - 1) * 12 + x] };
                decoded.push(if row[0] == 2 { b.wrapping_add(up) } else { b });
            }
        }
        assert_eq!(decoded, rgb);
    }
}
