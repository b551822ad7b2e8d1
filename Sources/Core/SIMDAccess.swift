/// Unaligned SIMD loads and stores through a pointer taken once outside a hot loop.
extension UnsafePointer {
    @inlinable @inline(__always)
    public func simd<V: SIMD>(_: V.Type = V.self, at i: Int) -> V where V.Scalar == Pointee {
        UnsafeRawPointer(self + i).loadUnaligned(as: V.self)
    }
}

extension UnsafeMutablePointer {
    @inlinable @inline(__always)
    public func simd<V: SIMD>(_: V.Type = V.self, at i: Int) -> V where V.Scalar == Pointee {
        UnsafeRawPointer(self + i).loadUnaligned(as: V.self)
    }

    @inlinable @inline(__always)
    public func store<V: SIMD>(_ v: V, at i: Int) where V.Scalar == Pointee {
        UnsafeMutableRawPointer(self + i).storeBytes(of: v, as: V.self)
    }
}
