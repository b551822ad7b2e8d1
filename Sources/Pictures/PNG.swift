import CZlib
import Foundation

/// A minimal PNG encoder (8-bit grayscale or RGB, no interlace, filter 0), enough for
/// mask heatmaps and token grids.
public struct Image: Sendable {
    public let width: Int
    public let height: Int
    public let channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int = 3, fill: UInt8 = 255) {
        precondition(width > 0 && height > 0 && (channels == 1 || channels == 3))
        self.width = width; self.height = height; self.channels = channels
        pixels = [UInt8](repeating: fill, count: width * height * channels)
    }

    public subscript(x: Int, y: Int) -> [UInt8] {
        get { let o = (y * width + x) * channels; return Array(pixels[o ..< o + channels]) }
        set { let o = (y * width + x) * channels; for c in 0 ..< channels { pixels[o + c] = newValue[c % newValue.count] } }
    }

    /// Copies `other` with its top-left corner at (x, y), clipped to this image.
    public mutating func paste(_ other: Image, x: Int, y: Int) {
        for yy in 0 ..< other.height where y + yy >= 0 && y + yy < height {
            for xx in 0 ..< other.width where x + xx >= 0 && x + xx < width {
                self[x + xx, y + yy] = other[xx, yy]
            }
        }
    }

    public func png() throws -> Data {
        var raw = [UInt8]()
        raw.reserveCapacity(height * (1 + width * channels))
        for y in 0 ..< height {
            raw.append(0)
            raw.append(contentsOf: pixels[(y * width * channels) ..< ((y + 1) * width * channels)])
        }
        var bound = compressBound(uLong(raw.count))
        var z = [UInt8](repeating: 0, count: Int(bound))
        let rc = compress2(&z, &bound, raw, uLong(raw.count), 6)
        guard rc == Z_OK else { throw PictureError(message: "zlib compress2 failed (\(rc))") }
        z.removeSubrange(Int(bound)...)
        var out = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        func chunk(_ type: String, _ body: [UInt8]) {
            var c = Data()
            withUnsafeBytes(of: UInt32(body.count).bigEndian) { c.append(contentsOf: $0) }
            let typed = Array(type.utf8) + body
            c.append(contentsOf: typed)
            let crc = typed.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt($0.count))) }
            withUnsafeBytes(of: crc.bigEndian) { c.append(contentsOf: $0) }
            out.append(c)
        }
        var ihdr = [UInt8]()
        for v in [UInt32(width), UInt32(height)] { withUnsafeBytes(of: v.bigEndian) { ihdr.append(contentsOf: $0) } }
        ihdr += [8, channels == 3 ? 2 : 0, 0, 0, 0]
        chunk("IHDR", ihdr)
        chunk("IDAT", z)
        chunk("IEND", [])
        return out
    }
}

public struct PictureError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
