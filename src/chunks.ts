// Buffer sizes for streaming backup files. Big enough for few syscalls, small enough that the
// buffers in flight (and those the garbage collector has not freed yet) keep memory flat.

/** Read size for backup files. */
export const READ_CHUNK = 256 * 1024;
/** How much a file writer buffers before it pushes back on its source. */
export const WRITE_BUFFER = 1024 * 1024;
