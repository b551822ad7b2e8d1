import CPNG
import CTurboJPEG
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A decoded picture: 8-bit RGB, row-major, `width × height × 3` bytes.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGBImage: \(pixels.count) bytes for \(width)×\(height)")
        self.width = width; self.height = height; self.pixels = pixels
    }
}

/// Why a file could not be decoded: the file, the library call and the library's own words.
public struct ImageDecodeError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let call: String
    public let message: String
    public var description: String { "\(file): \(call) failed: \(message)" }
    public init(file: String, call: String, message: String) { self.file = file; self.call = call; self.message = message }
}

/// JPEG through libjpeg-turbo's TurboJPEG API and PNG through libpng's simplified API: the
/// two entry points of those libraries that report errors as return values (their classic
/// APIs longjmp out of an error, which Swift cannot survive), so a damaged or hostile file
/// is an error, never a crash. Grey and palette images come out as RGB; alpha is dropped
/// onto black. Images larger than `maxPixels` are refused before any pixel is decoded.
public enum ImageDecoder {
    public static let maxPixels = 1 << 26  // 64 M pixels: 192 MiB of RGB

    public enum Format: String, Sendable { case jpeg, png }

    /// The format by its first bytes (the extension can lie), nil when neither.
    public static func sniff(_ data: [UInt8]) -> Format? {
        if data.count >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF { return .jpeg }
        if data.count >= 8 && data.prefix(8) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] { return .png }
        return nil
    }

    public static func decode(_ data: [UInt8], file: String) throws -> RGBImage {
        switch sniff(data) {
        case .jpeg: return try decodeJPEG(data, file: file)
        case .png: return try decodePNG(data, file: file)
        case nil: throw ImageDecodeError(file: file, call: "sniff", message: "neither JPEG nor PNG (first bytes \(data.prefix(4).map { String(format: "%02x", $0) }.joined()))")
        }
    }

    public static func decode(file: String) throws -> RGBImage {
        try decode(try read(file: file), file: file)
    }

    /// A picture file's bytes. Only regular files are read: a FIFO would block the reader
    /// until something writes to it, and a device has no end.
    public static func read(file: String) throws -> [UInt8] {
        var st = stat()
        guard stat(file, &st) == 0 else { throw ImageDecodeError(file: file, call: "stat", message: String(cString: strerror(errno))) }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG else {
            let what = kind == S_IFIFO ? "a FIFO" : kind == S_IFDIR ? "a directory" : kind == S_IFSOCK ? "a socket" : "a device"
            throw ImageDecodeError(file: file, call: "open", message: "\(what), not a regular file: remove it from the image folder")
        }
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ImageDecodeError(file: file, call: "open", message: String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw ImageDecodeError(file: file, call: "read", message: n == 0 ? "the file ended at byte \(done) of \(bytes.count) (it shrank while read)" : String(cString: strerror(errno)))
            }
            done += n
        }
        return bytes
    }

    /// The picture's width and height from its header, without decoding a pixel.
    public static func dimensions(_ data: [UInt8], file: String) throws -> (width: Int, height: Int) {
        switch sniff(data) {
        case .jpeg:
            guard let tj = tjInitDecompress() else { throw ImageDecodeError(file: file, call: "tjInitDecompress", message: String(cString: tjGetErrorStr())) }
            defer { tjDestroy(tj) }
            var w: Int32 = 0, h: Int32 = 0, sub: Int32 = 0, space: Int32 = 0
            let rc = data.withUnsafeBufferPointer { tjDecompressHeader3(tj, $0.baseAddress, UInt(data.count), &w, &h, &sub, &space) }
            guard rc == 0 else { throw ImageDecodeError(file: file, call: "tjDecompressHeader3", message: String(cString: tjGetErrorStr2(tj))) }
            guard w > 0, h > 0, Int(w) * Int(h) <= maxPixels else {
                throw ImageDecodeError(file: file, call: "tjDecompressHeader3", message: "\(w)×\(h) pixels is outside 1…\(maxPixels)")
            }
            return (Int(w), Int(h))
        case .png:
            var image = png_image()
            image.version = UInt32(PNG_IMAGE_VERSION)
            defer { png_image_free(&image) }
            let begun = data.withUnsafeBufferPointer { png_image_begin_read_from_memory(&image, $0.baseAddress, data.count) }
            guard begun != 0 else {
                let message = withUnsafeBytes(of: image.message) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
                throw ImageDecodeError(file: file, call: "png_image_begin_read_from_memory", message: message)
            }
            guard image.width > 0, image.height > 0, Int(image.width) * Int(image.height) <= maxPixels else {
                throw ImageDecodeError(file: file, call: "png_image_begin_read_from_memory", message: "\(image.width)×\(image.height) pixels is outside 1…\(maxPixels)")
            }
            return (Int(image.width), Int(image.height))
        case nil:
            throw ImageDecodeError(file: file, call: "sniff", message: "neither JPEG nor PNG (first bytes \(data.prefix(4).map { String(format: "%02x", $0) }.joined()))")
        }
    }

    /// Decodes at a reduced size where the format allows it: a JPEG comes out at the
    /// smallest of libjpeg-turbo's scaling factors (1/8 … 1) that is at least `minimumScale`,
    /// which skips most of the inverse DCT for a picture that will be shrunk anyway; a PNG
    /// comes out whole. The result's size says which scale was used.
    public static func decode(_ data: [UInt8], file: String, minimumScale: Double) throws -> RGBImage {
        guard sniff(data) == .jpeg, minimumScale < 1 else { return try decode(data, file: file) }
        return try decodeJPEG(data, file: file, minimumScale: minimumScale)
    }

    /// The scaling factors libjpeg-turbo offers, as (num, denom), smallest first.
    static let scalingFactors: [(num: Int, denom: Int)] = {
        var n: Int32 = 0
        guard let f = tjGetScalingFactors(&n), n > 0 else { return [(1, 1)] }
        return (0 ..< Int(n)).map { (Int(f[$0].num), Int(f[$0].denom)) }
            .filter { $0.num <= $0.denom }
            .sorted { Double($0.num) / Double($0.denom) < Double($1.num) / Double($1.denom) }
    }()

    static func decodeJPEG(_ data: [UInt8], file: String, minimumScale: Double = 1) throws -> RGBImage {
        guard let tj = tjInitDecompress() else { throw ImageDecodeError(file: file, call: "tjInitDecompress", message: String(cString: tjGetErrorStr())) }
        defer { tjDestroy(tj) }
        func failure(_ call: String) -> ImageDecodeError { ImageDecodeError(file: file, call: call, message: String(cString: tjGetErrorStr2(tj))) }
        var w: Int32 = 0, h: Int32 = 0, sub: Int32 = 0, space: Int32 = 0
        let header = data.withUnsafeBufferPointer { tjDecompressHeader3(tj, $0.baseAddress, UInt(data.count), &w, &h, &sub, &space) }
        guard header == 0 else { throw failure("tjDecompressHeader3") }
        guard w > 0, h > 0, Int(w) * Int(h) <= maxPixels else {
            throw ImageDecodeError(file: file, call: "tjDecompressHeader3", message: "\(w)×\(h) pixels is outside 1…\(maxPixels)")
        }
        // TJSCALED: ⌈dimension · num / denom⌉.
        let factor = scalingFactors.first { Double($0.num) / Double($0.denom) >= minimumScale } ?? (1, 1)
        let sw = (Int(w) * factor.num + factor.denom - 1) / factor.denom
        let sh = (Int(h) * factor.num + factor.denom - 1) / factor.denom
        var out = [UInt8](repeating: 0, count: sw * sh * 3)
        let rc = data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                tjDecompress2(tj, src.baseAddress, UInt(data.count), dst.baseAddress, Int32(sw), 0, Int32(sh), Int32(TJPF_RGB.rawValue), Int32(TJFLAG_ACCURATEDCT))
            }
        }
        // A warning (rc -1 with TJERR_WARNING) still leaves a usable picture, as browsers show it.
        if rc != 0 && tjGetErrorCode(tj) != Int32(TJERR_WARNING.rawValue) { throw failure("tjDecompress2") }
        return RGBImage(width: sw, height: sh, pixels: out)
    }

    static func decodePNG(_ data: [UInt8], file: String) throws -> RGBImage {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        defer { png_image_free(&image) }
        func failure(_ call: String) -> ImageDecodeError {
            let message = withUnsafeBytes(of: image.message) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
            return ImageDecodeError(file: file, call: call, message: message.isEmpty ? "unknown error" : message)
        }
        let begun = data.withUnsafeBufferPointer { png_image_begin_read_from_memory(&image, $0.baseAddress, data.count) }
        guard begun != 0 else { throw failure("png_image_begin_read_from_memory") }
        let w = Int(image.width), h = Int(image.height)
        guard w > 0, h > 0, w * h <= maxPixels else {
            throw ImageDecodeError(file: file, call: "png_image_begin_read_from_memory", message: "\(w)×\(h) pixels is outside 1…\(maxPixels)")
        }
        image.format = UInt32(PNG_FORMAT_RGB)
        var out = [UInt8](repeating: 0, count: w * h * 3)
        var black = png_color(red: 0, green: 0, blue: 0)
        let done = out.withUnsafeMutableBufferPointer { png_image_finish_read(&image, &black, $0.baseAddress, Int32(w * 3), nil) }
        guard done != 0 else { throw failure("png_image_finish_read") }
        return RGBImage(width: w, height: h, pixels: out)
    }
}
