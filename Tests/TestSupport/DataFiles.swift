import CZlib
import Datasets
import Foundation
import Images

// Writers of data files, for tests only: the shipped libraries read these formats and
// never write them.

extension IDXArray {
    /// Encodes unsigned-byte data as an IDX file.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = [0, 0, 0x08, UInt8(dimensions.count)]
        for d in dimensions {
            out += [UInt8(d >> 24 & 0xFF), UInt8(d >> 16 & 0xFF), UInt8(d >> 8 & 0xFF), UInt8(d & 0xFF)]
        }
        return out + bytes
    }
}

extension Gzip {
    /// Writes bytes gzip-compressed.
    public static func write(_ path: String, _ bytes: [UInt8]) throws {
        guard let gz = gzopen(path, "wb") else {
            throw DataError(file: path, problem: "gzopen for writing failed: \(String(cString: strerror(errno)))")
        }
        let n = bytes.withUnsafeBytes { gzwrite(gz, $0.baseAddress, UInt32($0.count)) }
        let closed = gzclose(gz)
        guard Int(n) == bytes.count, closed == Z_OK else {
            throw DataError(file: path, problem: "gzwrite failed (wrote \(n) of \(bytes.count) bytes, close \(closed))")
        }
    }
}

/// A generated image folder for tests: `perClass` training and `valPerClass` evaluation
/// pictures per class, of assorted sizes and aspect ratios, JPEG and PNG alternately.
/// Class k has its own colour cast and stripe direction (what a tiny ViT learns in a few
/// steps), with per-picture noise, so each file differs.
public enum ImageFolderMaker {
    public static let classNames = ["apple", "banana", "cherry", "date"]

    @discardableResult
    public static func make(root: String, perClass: Int, valPerClass: Int, seed: UInt64 = 7) throws -> Int {
        var rng = seed | 1
        func next() -> Int { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return Int(rng >> 33) }
        var written = 0
        for (split, count) in [("train", perClass), ("val", valPerClass)] {
            for (k, name) in classNames.enumerated() {
                let dir = "\(root)/\(split)/\(name)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                for i in 0 ..< count {
                    let w = 40 + next() % 57, h = 32 + next() % 49
                    var px = [UInt8](repeating: 0, count: w * h * 3)
                    for y in 0 ..< h {
                        for x in 0 ..< w {
                            let stripe = ((k % 2 == 0 ? x : y) / 4) % 2 == 0
                            for c in 0 ..< 3 {
                                var v = stripe ? 60 : 180
                                if c == k % 3 { v += 60 }
                                v += next() % 31 - 15
                                px[(y * w + x) * 3 + c] = UInt8(max(0, min(255, v)))
                            }
                        }
                    }
                    let image = RGBImage(width: w, height: h, pixels: px)
                    let png = i % 2 == 1
                    let bytes = png ? try ImageEncoder.png(image) : try ImageEncoder.jpeg(image, quality: 90)
                    let file = "\(dir)/\(String(format: "%04d", i)).\(png ? "png" : "jpg")"
                    guard FileManager.default.createFile(atPath: file, contents: Data(bytes)) else {
                        throw DataError(file: file, problem: "could not be written")
                    }
                    written += 1
                }
            }
        }
        return written
    }
}
