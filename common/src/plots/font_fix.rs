//! Works around a text-spacing bug in plotters' `ab_glyph` renderer.
//!
//! plotters 0.3.7 (`style/font/ab_glyph.rs`) rasterises each glyph into its
//! pixel bounding box and pastes that box at the pen position, dropping the
//! box's x offset, i.e. the glyph's left side bearing. Glyphs with a wide
//! bearing ("1", ".", "l", "i") therefore sit too far left, and "1.03" reads
//! "1. 03" at tick-label sizes.
//!
//! The fix here is on the font side: [`anchor_at_origin`] gives every simple
//! glyph whose ink starts right of x = 0 an extra one-point contour at x = 0.
//! A one-point contour draws nothing, but the outline's bounding box (which
//! ttf-parser computes from the points) then starts at x = 0, so the box
//! plotters pastes at the pen position is anchored at the glyph origin and
//! the bearing is kept. Advances, vertical metrics and every existing point
//! are unchanged.
//!
//! The patched `glyf` and `loca` tables are appended to a copy of the font
//! and the table directory is pointed at them; table checksums are not
//! updated (ttf-parser, which reads the font, does not check them).

/// Reads a big-endian u16 at `at`.
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Offset of the table record (in the directory) for `tag`.
fn table_record(font: &[u8], tag: &[u8; 4]) -> Option<usize> {
    let tables = u16_at(font, 4)? as usize;
    (0..tables)
        .map(|i| 12 + 16 * i)
        .find(|&rec| font.get(rec..rec + 4) == Some(&tag[..]))
}

/// The bytes of table `tag`.
fn table<'f>(font: &'f [u8], tag: &[u8; 4]) -> Option<&'f [u8]> {
    let rec = table_record(font, tag)?;
    let offset = u32_at(font, rec + 8)? as usize;
    let len = u32_at(font, rec + 12)? as usize;
    font.get(offset..offset.checked_add(len)?)
}

const ON_CURVE: u8 = 0x01;
const X_SHORT: u8 = 0x02;
const Y_SHORT: u8 = 0x04;
const REPEAT: u8 = 0x08;
const X_SAME_OR_POSITIVE: u8 = 0x10;
const Y_SAME_OR_POSITIVE: u8 = 0x20;

/// A simple glyph taken apart: where its sections are and its points.
struct SimpleGlyph {
    contours: usize,
    /// Offset of the instruction length field (just after the end points).
    instructions_at: usize,
    /// Offset of the flags, x and y arrays and the end of the y array.
    flags_at: usize,
    xs_at: usize,
    ys_at: usize,
    end: usize,
    /// Absolute point coordinates.
    points: Vec<(i32, i32)>,
}

fn parse_simple(g: &[u8]) -> Option<SimpleGlyph> {
    let contours = usize::try_from(i16_at(g, 0)?).ok().filter(|&n| n > 0)?;
    let instructions_at = 10 + 2 * contours;
    let total = u16_at(g, instructions_at - 2)? as usize + 1;
    let flags_at = instructions_at + 2 + u16_at(g, instructions_at)? as usize;
    let mut flags = Vec::with_capacity(total);
    let mut at = flags_at;
    while flags.len() < total {
        let f = *g.get(at)?;
        at += 1;
        let repeats = if f & REPEAT != 0 {
            at += 1;
            *g.get(at - 1)? as usize + 1
        } else {
            1
        };
        flags.extend(std::iter::repeat_n(f, repeats));
    }
    if flags.len() != total {
        return None;
    }
    let xs_at = at;
    let read = |at: &mut usize, f: u8, short: u8, same: u8| -> Option<i32> {
        Some(if f & short != 0 {
            *at += 1;
            let d = *g.get(*at - 1)? as i32;
            if f & same != 0 {
                d
            } else {
                -d
            }
        } else if f & same != 0 {
            0
        } else {
            *at += 2;
            i16_at(g, *at - 2)? as i32
        })
    };
    let mut xs = Vec::with_capacity(total);
    let mut x = 0;
    for &f in &flags {
        x += read(&mut at, f, X_SHORT, X_SAME_OR_POSITIVE)?;
        xs.push(x);
    }
    let ys_at = at;
    let mut points = Vec::with_capacity(total);
    let mut y = 0;
    for (&f, &x) in flags.iter().zip(&xs) {
        y += read(&mut at, f, Y_SHORT, Y_SAME_OR_POSITIVE)?;
        points.push((x, y));
    }
    if at > g.len() {
        return None;
    }
    Some(SimpleGlyph {
        contours,
        instructions_at,
        flags_at,
        xs_at,
        ys_at,
        end: at,
        points,
    })
}

/// The glyph with a one-point contour at (0, y of its last point) added, or
/// `None` when it needs none (no outline, a composite, or ink reaching x <= 0)
/// or cannot be parsed.
fn anchor_glyph(g: &[u8]) -> Option<Vec<u8>> {
    let s = parse_simple(g)?;
    let min_x = s.points.iter().map(|p| p.0).min()?;
    let &(last_x, _) = s.points.last()?;
    let dx = i16::try_from(-last_x).ok()?;
    if min_x <= 0 || s.points.len() >= u16::MAX as usize {
        return None;
    }
    let mut out = Vec::with_capacity(s.end + 8);
    out.extend_from_slice(&(s.contours as i16 + 1).to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes()); // xMin
    out.extend_from_slice(&g[4..s.instructions_at]); // yMin, xMax, yMax, end points
    out.extend_from_slice(&(s.points.len() as u16).to_be_bytes()); // new last end point
    out.extend_from_slice(&g[s.instructions_at..s.xs_at]); // instructions, flags
    out.push(ON_CURVE | Y_SAME_OR_POSITIVE); // x: 16-bit delta, y: same
    out.extend_from_slice(&g[s.xs_at..s.ys_at]);
    out.extend_from_slice(&dx.to_be_bytes());
    out.extend_from_slice(&g[s.ys_at..s.end]);
    debug_assert!(s.flags_at < s.xs_at);
    Some(out)
}

/// A copy of the TrueType font `font` in which every simple glyph's outline
/// bounding box starts at x = 0 or left of it (see the module docs), or
/// `None` if the font is not laid out as expected (use it unpatched then).
pub(crate) fn anchor_at_origin(font: &[u8]) -> Option<Vec<u8>> {
    let glyph_count = u16_at(table(font, b"maxp")?, 4)? as usize;
    let head_rec = table_record(font, b"head")?;
    let head_at = u32_at(font, head_rec + 8)? as usize;
    let long_loca = i16_at(font, head_at + 50)? == 1;
    let loca = table(font, b"loca")?;
    let glyf = table(font, b"glyf")?;
    let offset = |i: usize| -> Option<usize> {
        Some(if long_loca {
            u32_at(loca, 4 * i)? as usize
        } else {
            2 * u16_at(loca, 2 * i)? as usize
        })
    };

    let mut new_glyf: Vec<u8> = Vec::with_capacity(glyf.len() + glyph_count * 8);
    let mut new_loca: Vec<u8> = Vec::with_capacity(4 * (glyph_count + 1));
    let mut patched = 0;
    for i in 0..glyph_count {
        new_loca.extend_from_slice(&u32::try_from(new_glyf.len()).ok()?.to_be_bytes());
        let g = glyf.get(offset(i)?..offset(i + 1)?)?;
        match anchor_glyph(g) {
            Some(anchored) => {
                new_glyf.extend_from_slice(&anchored);
                patched += 1;
            }
            None => new_glyf.extend_from_slice(g),
        }
        while new_glyf.len() & 3 != 0 {
            new_glyf.push(0);
        }
    }
    new_loca.extend_from_slice(&u32::try_from(new_glyf.len()).ok()?.to_be_bytes());
    if patched == 0 {
        return None;
    }

    let mut out = font.to_vec();
    let append = |out: &mut Vec<u8>, tag: &[u8; 4], data: &[u8]| -> Option<()> {
        while out.len() & 3 != 0 {
            out.push(0);
        }
        let rec = table_record(out, tag)?;
        let at = u32::try_from(out.len()).ok()?;
        let len = u32::try_from(data.len()).ok()?;
        out[rec + 8..rec + 12].copy_from_slice(&at.to_be_bytes());
        out[rec + 12..rec + 16].copy_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
        Some(())
    };
    append(&mut out, b"glyf", &new_glyf)?;
    append(&mut out, b"loca", &new_loca)?;
    out[head_at + 50..head_at + 52].copy_from_slice(&1i16.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simple glyph's contour count and points.
    type Outline = (usize, Vec<(i32, i32)>);

    /// Every glyph's outline, via loca/glyf (`None` for all but simple glyphs).
    fn outlines(font: &[u8]) -> Vec<Option<Outline>> {
        let glyph_count = u16_at(table(font, b"maxp").unwrap(), 4).unwrap() as usize;
        let head = table(font, b"head").unwrap();
        let long = i16_at(head, 50).unwrap() == 1;
        let loca = table(font, b"loca").unwrap();
        let glyf = table(font, b"glyf").unwrap();
        let off = |i: usize| {
            if long {
                u32_at(loca, 4 * i).unwrap() as usize
            } else {
                2 * u16_at(loca, 2 * i).unwrap() as usize
            }
        };
        (0..glyph_count)
            .map(|i| parse_simple(&glyf[off(i)..off(i + 1)]).map(|s| (s.contours, s.points)))
            .collect()
    }

    #[test]
    fn dejavu_glyphs_keep_their_points_and_start_at_zero() {
        for font in [dejavu::sans::regular(), dejavu::sans::bold()] {
            let patched = anchor_at_origin(font).expect("DejaVu Sans can be patched");
            let before = outlines(font);
            let after = outlines(&patched);
            assert_eq!(before.len(), after.len());
            let mut changed = 0;
            for (b, a) in before.iter().zip(&after) {
                match (b, a) {
                    (None, None) => {}
                    (Some((bc, bp)), Some((ac, ap))) => {
                        assert_eq!(ap[..bp.len()], bp[..], "existing points moved");
                        if ap.len() > bp.len() {
                            changed += 1;
                            assert_eq!((*ac, ap.len()), (bc + 1, bp.len() + 1));
                            assert_eq!(ap.last().unwrap().0, 0);
                        }
                        assert!(ap.iter().map(|p| p.0).min().unwrap() <= 0);
                    }
                    _ => panic!("a glyph changed kind"),
                }
            }
            assert!(changed > 1000, "only {changed} glyphs anchored");
        }
    }

    #[test]
    fn malformed_fonts_are_left_alone() {
        assert!(anchor_at_origin(&[]).is_none());
        assert!(anchor_at_origin(&[0; 64]).is_none());
        let font = dejavu::sans::regular();
        assert!(anchor_at_origin(&font[..font.len() / 2]).is_none());
    }
}
