import CPNG
import CTurboJPEG
import Foundation

/// The other direction, for tests and tools that make image folders: RGB to JPEG (quality
/// 1…100, 4:4:4) and to PNG, through the same libraries.
public enum ImageEncoder {
    public static func jpeg(_ image: RGBImage, quality: Int = 90) throws -> [UInt8] {
        guard let tj = tjInitCompress() else { throw ImageDecodeError(file: "<memory>", call: "tjInitCompress", message: String(cString: tjGetErrorStr())) }
        defer { tjDestroy(tj) }
        var buffer: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let rc = image.pixels.withUnsafeBufferPointer { src in
            tjCompress2(tj, src.baseAddress, Int32(image.width), 0, Int32(image.height), Int32(TJPF_RGB.rawValue), &buffer, &size,
                        Int32(TJSAMP_444.rawValue), Int32(max(1, min(100, quality))), Int32(TJFLAG_ACCURATEDCT))
        }
        defer { if let buffer { tjFree(buffer) } }
        guard rc == 0, let buffer else { throw ImageDecodeError(file: "<memory>", call: "tjCompress2", message: String(cString: tjGetErrorStr2(tj))) }
        return Array(UnsafeBufferPointer(start: buffer, count: Int(size)))
    }

    public static func png(_ image: RGBImage) throws -> [UInt8] {
        var img = png_image()
        img.version = UInt32(PNG_IMAGE_VERSION)
        img.width = UInt32(image.width); img.height = UInt32(image.height)
        img.format = UInt32(PNG_FORMAT_RGB)
        defer { png_image_free(&img) }
        var size = 0
        // First the size, then the bytes.
        let sized = image.pixels.withUnsafeBufferPointer { png_image_write_to_memory(&img, nil, &size, 0, $0.baseAddress, Int32(image.width * 3), nil) }
        guard sized != 0, size > 0 else { throw ImageDecodeError(file: "<memory>", call: "png_image_write_to_memory", message: "cannot size the PNG") }
        var out = [UInt8](repeating: 0, count: size)
        let written = out.withUnsafeMutableBufferPointer { dst in
            image.pixels.withUnsafeBufferPointer { png_image_write_to_memory(&img, dst.baseAddress, &size, 0, $0.baseAddress, Int32(image.width * 3), nil) }
        }
        guard written != 0 else { throw ImageDecodeError(file: "<memory>", call: "png_image_write_to_memory", message: "write failed") }
        return Array(out.prefix(size))
    }
}
