namespace NativeMmu;

/// <summary>errno values as Linux numbers them (include/uapi/asm-generic/errno-base.h). 0 is success.</summary>
public enum Errno
{
    Success = 0,
    EPERM = 1,
    ENOENT = 2,
    EINTR = 4,
    EBADF = 9,
    EAGAIN = 11,
    ENOMEM = 12,
    EACCES = 13,
    EFAULT = 14,
    EBUSY = 16,
    EEXIST = 17,
    ENODEV = 19,
    EINVAL = 22,
    ENOSPC = 28,
}

/// <summary>A system call's failure, for callers that prefer exceptions to errno values.</summary>
public sealed class ErrnoException(Errno errno, string call) : Exception($"{call}: {errno}")
{
    public Errno Errno { get; } = errno;
}
