! The Fortran module `geds`: iso_c_binding interfaces over libgeds's C ABI (geds.h).
!   gfortran -c geds.f90 && gfortran app.f90 geds.o $(pkg-config --libs geds)
! Handles are type(c_ptr). Functions taking names take Fortran strings (trailing blanks are trimmed, the NUL is
! added here); byte buffers are any contiguous array, with their length in bytes. Results are the C ones: 0 or a
! negative GEDS_E_* code (geds_read: bytes read); geds_last_error() is this thread's last message.
! Iterators: geds_list / geds_list_buckets / geds_locations / geds_metadata_list, then geds_next until it
! returns 0, then geds_iter_close. Metadata: names and values as arrays of strings. The C geds_abi_version() has no
! twin here (Fortran names ignore case, and GEDS_ABI_VERSION is this module's constant); geds_version() names it.
module geds
  use, intrinsic :: iso_c_binding
  implicit none
  private

  integer, parameter, public :: GEDS_ABI_VERSION = 1
  integer(c_int), parameter, public :: GEDS_OK = 0, GEDS_E_INVALID_NAME = -1, GEDS_E_INVALID_ARGUMENT = -2, &
    GEDS_E_NO_SUCH_BUCKET = -3, GEDS_E_NO_SUCH_OBJECT = -4, GEDS_E_BUCKET_EXISTS = -5, GEDS_E_BUCKET_NOT_EMPTY = -6, &
    GEDS_E_OBJECT_SEALED = -7, GEDS_E_OBJECT_NOT_SEALED = -8, GEDS_E_OBJECT_LOST = -9, GEDS_E_MDS_UNREACHABLE = -10, &
    GEDS_E_PEER_UNREACHABLE = -11, GEDS_E_PROTOCOL_VIOLATION = -12, GEDS_E_FRAME_TOO_LARGE = -13, &
    GEDS_E_OUT_OF_SPACE = -14, GEDS_E_TIMED_OUT = -15, GEDS_E_IO = -16, GEDS_E_NO_SUCH_NODE = -17, &
    GEDS_E_NO_SUCH_BLOB = -18, GEDS_E_METADATA_TOO_LARGE = -19, GEDS_E_INTERNAL = -20, &
    GEDS_E_CHECKSUM_MISMATCH = -21, GEDS_E_S3_DELETION_PENDING = -22, &
    GEDS_E_COMPACTED = -23, GEDS_E_SUBSCRIBER_TOO_SLOW = -24, GEDS_E_OBJECT_EXISTS = -25, &
    GEDS_E_AUTHENTICATION_FAILED = -26

  ! geds_config_t (geds_connect's optional arguments fill it in; its defaults are geds_config_init's)
  type, bind(C), public :: geds_config
    type(c_ptr) :: mds = c_null_ptr, transport = c_null_ptr, tier0_dir = c_null_ptr, host_id = c_null_ptr, &
                   name = c_null_ptr, persistency = c_null_ptr
    integer(c_int64_t) :: timeout_ms = 0
    integer(c_int64_t) :: tier0_capacity = 0
  end type

  ! Fortran strings as C strings for the calls that take arrays of them.
  type :: c_strings
    character(kind=c_char), allocatable :: chars(:)
    type(c_ptr), allocatable :: pointers(:)
  contains
    procedure :: set => strings_set
  end type

  ! geds_stat_t
  type, bind(C), public :: geds_stat_t
    integer(c_int64_t) :: size, modified_ms
    integer(c_int32_t) :: locations, metadata_count
  end type

  integer(c_int), parameter, public :: GEDS_ENTRY_OBJECT = 0, GEDS_ENTRY_PREFIX = 1, GEDS_ENTRY_BUCKET = 2, &
    GEDS_ENTRY_LOCATION = 3, GEDS_ENTRY_METADATA = 4

  ! geds_entry_t
  type, bind(C) :: c_entry
    integer(c_int) :: kind
    type(c_ptr) :: name, detail
    integer(c_int64_t) :: size, modified_ms
  end type

  ! One entry of an iterator, with Fortran strings.
  type, public :: geds_entry
    integer :: kind = 0
    character(:), allocatable :: name, detail
    integer(c_int64_t) :: size = 0, modified_ms = 0
  end type

  public :: geds_list, geds_list_buckets, geds_locations, geds_metadata_list, geds_next, geds_iter_close, &
            geds_metadata_get, geds_metadata_set, geds_seal_metadata, geds_set_bucket_storage
  public :: geds_writer_size
  public :: geds_connect, geds_close, geds_create_bucket, geds_delete_bucket, geds_create, geds_write, geds_truncate, &
            geds_seal, geds_writer_discard, geds_open, geds_reader_size, geds_read, geds_reader_close, &
            geds_read_object, geds_put, geds_view, geds_view_release, geds_stat, geds_delete, geds_delete_prefix, geds_rename, &
            geds_copy, geds_relocate, geds_flush, geds_strerror, geds_last_error, geds_version, geds_wait

  ! Functions without names: called directly.
  interface
    subroutine geds_close(g) bind(C, name="geds_close")
      import :: c_ptr
      type(c_ptr), value :: g
    end subroutine
    integer(c_int) function geds_write(w, buf, len, offset) bind(C, name="geds_write")
      import :: c_ptr, c_int, c_size_t, c_int64_t
      type(c_ptr), value :: w
      type(*), dimension(*), intent(in) :: buf
      integer(c_size_t), value :: len
      integer(c_int64_t), value :: offset
    end function
    integer(c_int) function geds_truncate(w, size) bind(C, name="geds_truncate")
      import :: c_ptr, c_int, c_int64_t
      type(c_ptr), value :: w
      integer(c_int64_t), value :: size
    end function
    integer(c_int) function geds_seal(w) bind(C, name="geds_seal")
      import :: c_ptr, c_int
      type(c_ptr), value :: w
    end function
    integer(c_int) function geds_writer_size(w, size) bind(C, name="geds_writer_size")
      import :: c_ptr, c_int, c_int64_t
      type(c_ptr), value :: w
      integer(c_int64_t), intent(out) :: size
    end function
    subroutine geds_writer_discard(w) bind(C, name="geds_writer_discard")
      import :: c_ptr
      type(c_ptr), value :: w
    end subroutine
    integer(c_int) function geds_reader_size(r, size) bind(C, name="geds_reader_size")
      import :: c_ptr, c_int, c_int64_t
      type(c_ptr), value :: r
      integer(c_int64_t), intent(out) :: size
    end function
    integer(c_int64_t) function geds_read(r, buf, len, offset) bind(C, name="geds_read")
      import :: c_ptr, c_size_t, c_int64_t
      type(c_ptr), value :: r
      type(*), dimension(*), intent(inout) :: buf
      integer(c_size_t), value :: len
      integer(c_int64_t), value :: offset
    end function
    subroutine geds_reader_close(r) bind(C, name="geds_reader_close")
      import :: c_ptr
      type(c_ptr), value :: r
    end subroutine
    ! data: the object's bytes (use c_f_pointer), valid until geds_view_release(view)
    integer(c_int) function geds_view(r, view, data, size) bind(C, name="geds_view")
      import :: c_ptr, c_int, c_int64_t
      type(c_ptr), value :: r
      type(c_ptr), intent(out) :: view, data
      integer(c_int64_t), intent(out) :: size
    end function
    subroutine geds_view_release(view) bind(C, name="geds_view_release")
      import :: c_ptr
      type(c_ptr), value :: view
    end subroutine
    subroutine geds_iter_close(it) bind(C, name="geds_iter_close")
      import :: c_ptr
      type(c_ptr), value :: it
    end subroutine
    integer(c_int) function geds_list_buckets(g, it) bind(C, name="geds_list_buckets")
      import :: c_ptr, c_int
      type(c_ptr), value :: g
      type(c_ptr), intent(out) :: it
    end function
    integer(c_int) function geds_flush(g, timeout_ms) bind(C, name="geds_flush")
      import :: c_ptr, c_int, c_int64_t
      type(c_ptr), value :: g
      integer(c_int64_t), value :: timeout_ms
    end function
  end interface

  ! Functions with names: wrapped below. Signatures several calls share:
  abstract interface
    integer(c_int) function object_out(g, bucket, key, out) bind(C)  ! (geds_t *, bucket, key, T **out)
      import :: c_ptr, c_int, c_char
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key
      type(c_ptr), intent(out) :: out
    end function
    integer(c_int) function object_to_object(g, bucket, key, to_bucket, to_key) bind(C)
      import :: c_ptr, c_int, c_char
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key, to_bucket, to_key
    end function
    integer(c_int) function object_only(g, bucket, key) bind(C)
      import :: c_ptr, c_int, c_char
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key
    end function
  end interface
  procedure(object_out), bind(C, name="geds_create") :: c_create
  procedure(object_out), bind(C, name="geds_open") :: c_open
  procedure(object_out), bind(C, name="geds_locations") :: c_locations
  procedure(object_out), bind(C, name="geds_metadata_list") :: c_metadata_list
  procedure(object_to_object), bind(C, name="geds_rename") :: c_rename
  procedure(object_to_object), bind(C, name="geds_copy") :: c_copy
  procedure(object_only), bind(C, name="geds_delete") :: c_delete

  interface
    integer(c_int) function c_connect_config(config, out) bind(C, name="geds_connect_config")
      import :: c_ptr, c_int, geds_config
      type(geds_config), intent(in) :: config
      type(c_ptr), intent(out) :: out
    end function
    integer(c_int) function c_wait(g, bucket, key, timeout_ms) bind(C, name="geds_wait")
      import :: c_ptr, c_int, c_char, c_int64_t
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key
      integer(c_int64_t), value :: timeout_ms
    end function
    integer(c_int) function c_create_bucket(g, bucket) bind(C, name="geds_create_bucket")
      import :: c_ptr, c_int, c_char
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket
    end function
    integer(c_int) function c_delete_bucket(g, bucket, force) bind(C, name="geds_delete_bucket")
      import :: c_ptr, c_int, c_char
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket
      integer(c_int), value :: force
    end function
    integer(c_int) function c_put(g, bucket, key, buf, len) bind(C, name="geds_put")
      import :: c_ptr, c_int, c_char, c_size_t
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key
      type(*), dimension(*), intent(in) :: buf
      integer(c_size_t), value :: len
    end function
    integer(c_int64_t) function c_read_object(g, bucket, key, buf, len, offset) bind(C, name="geds_read_object")
      import :: c_ptr, c_char, c_size_t, c_int64_t
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key
      type(*), dimension(*), intent(inout) :: buf
      integer(c_size_t), value :: len
      integer(c_int64_t), value :: offset
    end function
    integer(c_int) function c_stat(g, bucket, key, out) bind(C, name="geds_stat")
      import :: c_ptr, c_int, c_char, geds_stat_t
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key
      type(geds_stat_t), intent(out) :: out
    end function
    integer(c_int) function c_delete_prefix(g, bucket, prefix, deleted) bind(C, name="geds_delete_prefix")
      import :: c_ptr, c_int, c_char, c_int64_t
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, prefix
      integer(c_int64_t), intent(out) :: deleted
    end function
    integer(c_int) function c_relocate(g, bucket, key, node) bind(C, name="geds_relocate")
      import :: c_ptr, c_int, c_char
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key
      type(c_ptr), value :: node
    end function
    integer(c_int) function c_list(g, bucket, prefix, delimiter, it) bind(C, name="geds_list")
      import :: c_ptr, c_int, c_char
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, prefix, delimiter
      type(c_ptr), intent(out) :: it
    end function
    integer(c_int) function c_next(it, entry) bind(C, name="geds_next")
      import :: c_ptr, c_int, c_entry
      type(c_ptr), value :: it
      type(c_entry), intent(out) :: entry
    end function
    integer(c_int64_t) function c_metadata_get(g, bucket, key, name, value, capacity) bind(C, name="geds_metadata_get")
      import :: c_ptr, c_char, c_size_t, c_int64_t
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key, name
      type(c_ptr), value :: value
      integer(c_size_t), value :: capacity
    end function
    integer(c_int) function c_metadata_set(g, bucket, key, names, values, count) bind(C, name="geds_metadata_set")
      import :: c_ptr, c_int, c_char, c_size_t
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket, key
      type(c_ptr), dimension(*), intent(in) :: names, values
      integer(c_size_t), value :: count
    end function
    integer(c_int) function c_seal_metadata(w, names, values, count) bind(C, name="geds_seal_metadata")
      import :: c_ptr, c_int, c_size_t
      type(c_ptr), value :: w
      type(c_ptr), dimension(*), intent(in) :: names, values
      integer(c_size_t), value :: count
    end function
    integer(c_int) function c_set_bucket_storage(g, bucket, s3, prefix, region, persistency) &
        bind(C, name="geds_set_bucket_storage")
      import :: c_ptr, c_int, c_char
      type(c_ptr), value :: g
      character(kind=c_char), dimension(*), intent(in) :: bucket
      type(c_ptr), value :: s3, prefix, region, persistency
    end function
    type(c_ptr) function c_strerror(code) bind(C, name="geds_strerror")
      import :: c_ptr, c_int
      integer(c_int), value :: code
    end function
    type(c_ptr) function c_last_error() bind(C, name="geds_last_error")
      import :: c_ptr
    end function
    type(c_ptr) function c_version() bind(C, name="geds_version")
      import :: c_ptr
    end function
    integer(c_size_t) function c_strlen(s) bind(C, name="strlen")
      import :: c_ptr, c_size_t
      type(c_ptr), value :: s
    end function
  end interface

contains

  ! A Fortran string as a NUL-terminated C string (trailing blanks trimmed).
  pure function c_str(text) result(chars)
    character(*), intent(in) :: text
    character(kind=c_char), allocatable :: chars(:)
    integer :: i, n
    n = len_trim(text)
    allocate(chars(n + 1))
    do i = 1, n
      chars(i) = text(i:i)
    end do
    chars(n + 1) = c_null_char
  end function

  ! A C string (static or library-owned) as a Fortran string.
  function f_str(pointer) result(text)
    type(c_ptr), intent(in) :: pointer
    character(:), allocatable :: text
    character(kind=c_char), pointer :: chars(:)
    integer :: i, n
    n = int(c_strlen(pointer))
    call c_f_pointer(pointer, chars, [n])
    allocate(character(n) :: text)
    do i = 1, n
      text(i:i) = chars(i)
    end do
  end function

  ! Connects to the MDS (absent: $GEDS_MDS); host_id and transport as in geds_config_t.
  integer(c_int) function geds_connect(g, mds, host_id, transport) result(rc)
    type(c_ptr), intent(out) :: g
    character(*), intent(in), optional :: mds, host_id, transport
    character(kind=c_char), allocatable, target :: mds_c(:), host_c(:), transport_c(:)
    type(geds_config) :: config
    if (present(mds)) then
      allocate(mds_c, source=c_str(mds))
      config%mds = c_loc(mds_c)
    end if
    if (present(host_id)) then
      allocate(host_c, source=c_str(host_id))
      config%host_id = c_loc(host_c)
    end if
    if (present(transport)) then
      allocate(transport_c, source=c_str(transport))
      config%transport = c_loc(transport_c)
    end if
    rc = c_connect_config(config, g)
  end function

  integer(c_int) function geds_create_bucket(g, bucket) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket
    rc = c_create_bucket(g, c_str(bucket))
  end function

  integer(c_int) function geds_delete_bucket(g, bucket, force) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket
    logical, intent(in) :: force
    rc = c_delete_bucket(g, c_str(bucket), merge(1_c_int, 0_c_int, force))
  end function

  integer(c_int) function geds_create(g, bucket, key, w) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    type(c_ptr), intent(out) :: w
    rc = c_create(g, c_str(bucket), c_str(key), w)
  end function

  integer(c_int) function geds_open(g, bucket, key, r) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    type(c_ptr), intent(out) :: r
    rc = c_open(g, c_str(bucket), c_str(key), r)
  end function

  ! Looks up and reads len bytes at offset into buf; bytes read or GEDS_E_*.
  integer(c_int64_t) function geds_read_object(g, bucket, key, buf, len, offset) result(count)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    type(*), dimension(*), intent(inout) :: buf
    integer(c_size_t), intent(in) :: len
    integer(c_int64_t), intent(in) :: offset
    count = c_read_object(g, c_str(bucket), c_str(key), buf, len, offset)
  end function

  ! Writes len bytes of buf as the object bucket/key and seals it, in one call (create + write + seal).
  integer(c_int) function geds_put(g, bucket, key, buf, len) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    type(*), dimension(*), intent(in) :: buf
    integer(c_size_t), intent(in) :: len
    rc = c_put(g, c_str(bucket), c_str(key), buf, len)
  end function

  integer(c_int) function geds_stat(g, bucket, key, info) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    type(geds_stat_t), intent(out) :: info
    rc = c_stat(g, c_str(bucket), c_str(key), info)
  end function

  integer(c_int) function geds_delete(g, bucket, key) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    rc = c_delete(g, c_str(bucket), c_str(key))
  end function

  ! Returns GEDS_OK once the object exists sealed; GEDS_E_TIMED_OUT after timeout_ms (negative: no limit).
  integer(c_int) function geds_wait(g, bucket, key, timeout_ms) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    integer(c_int64_t), intent(in) :: timeout_ms
    rc = c_wait(g, c_str(bucket), c_str(key), timeout_ms)
  end function

  integer(c_int) function geds_delete_prefix(g, bucket, prefix, deleted) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, prefix
    integer(c_int64_t), intent(out) :: deleted
    rc = c_delete_prefix(g, c_str(bucket), c_str(prefix), deleted)
  end function

  integer(c_int) function geds_rename(g, bucket, key, to_bucket, to_key) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key, to_bucket, to_key
    rc = c_rename(g, c_str(bucket), c_str(key), c_str(to_bucket), c_str(to_key))
  end function

  integer(c_int) function geds_copy(g, bucket, key, to_bucket, to_key) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key, to_bucket, to_key
    rc = c_copy(g, c_str(bucket), c_str(key), c_str(to_bucket), c_str(to_key))
  end function

  ! Moves a sealed object to the named node (absent: the least loaded gedsd).
  integer(c_int) function geds_relocate(g, bucket, key, node) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    character(*), intent(in), optional :: node
    character(kind=c_char), allocatable, target :: node_c(:)
    if (present(node)) then
      allocate(node_c, source=c_str(node))
      rc = c_relocate(g, c_str(bucket), c_str(key), c_loc(node_c))
    else
      rc = c_relocate(g, c_str(bucket), c_str(key), c_null_ptr)
    end if
  end function

  ! Objects (and common prefixes with a delimiter) under prefix; '' for none.
  integer(c_int) function geds_list(g, bucket, prefix, delimiter, it) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, prefix, delimiter
    type(c_ptr), intent(out) :: it
    rc = c_list(g, c_str(bucket), c_str(prefix), c_str(delimiter), it)
  end function

  integer(c_int) function geds_locations(g, bucket, key, it) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    type(c_ptr), intent(out) :: it
    rc = c_locations(g, c_str(bucket), c_str(key), it)
  end function

  integer(c_int) function geds_metadata_list(g, bucket, key, it) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key
    type(c_ptr), intent(out) :: it
    rc = c_metadata_list(g, c_str(bucket), c_str(key), it)
  end function

  ! 1: entry filled, 0: the end, < 0: GEDS_E_*.
  integer(c_int) function geds_next(it, entry) result(rc)
    type(c_ptr), intent(in) :: it
    type(geds_entry), intent(out) :: entry
    type(c_entry) :: raw
    rc = c_next(it, raw)
    if (rc /= 1) return
    entry%kind = raw%kind
    entry%name = f_str(raw%name)
    entry%detail = f_str(raw%detail)
    entry%size = raw%size
    entry%modified_ms = raw%modified_ms
  end function

  ! The value of one metadata entry (GEDS_E_INVALID_ARGUMENT in rc if the object has none by that name).
  function geds_metadata_get(g, bucket, key, name, rc) result(value)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key, name
    integer(c_int), intent(out) :: rc
    character(:), allocatable :: value
    character(kind=c_char), allocatable, target :: chars(:)
    integer(c_int64_t) :: length
    integer :: i
    value = ''
    length = c_metadata_get(g, c_str(bucket), c_str(key), c_str(name), c_null_ptr, 0_c_size_t)
    rc = int(min(length, 0_c_int64_t), c_int)
    if (length < 0) return
    allocate(chars(length + 1))
    length = c_metadata_get(g, c_str(bucket), c_str(key), c_str(name), c_loc(chars), int(size(chars), c_size_t))
    rc = int(min(length, 0_c_int64_t), c_int)
    if (length < 0) return
    value = repeat(' ', int(length))
    do i = 1, int(length)
      value(i:i) = chars(i)
    end do
  end function

  ! Replaces the object's user metadata with names(i) = values(i) (trailing blanks trimmed).
  integer(c_int) function geds_metadata_set(g, bucket, key, names, values) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket, key, names(:), values(:)
    type(c_strings), target :: cn, cv
    if (size(names) /= size(values)) then
      rc = GEDS_E_INVALID_ARGUMENT
      return
    end if
    call cn%set(names)
    call cv%set(values)
    rc = c_metadata_set(g, c_str(bucket), c_str(key), cn%pointers, cv%pointers, int(size(names), c_size_t))
  end function

  ! geds_seal with user metadata names(i) = values(i).
  integer(c_int) function geds_seal_metadata(w, names, values) result(rc)
    type(c_ptr), intent(in) :: w
    character(*), intent(in) :: names(:), values(:)
    type(c_strings), target :: cn, cv
    if (size(names) /= size(values)) then
      rc = GEDS_E_INVALID_ARGUMENT
      return
    end if
    call cn%set(names)
    call cv%set(values)
    rc = c_seal_metadata(w, cn%pointers, cv%pointers, int(size(names), c_size_t))
  end function

  ! Gives a bucket an S3 store ("http://HOST:PORT/S3BUCKET"); absent s3: takes it away.
  integer(c_int) function geds_set_bucket_storage(g, bucket, s3, prefix, region, persistency) result(rc)
    type(c_ptr), intent(in) :: g
    character(*), intent(in) :: bucket
    character(*), intent(in), optional :: s3, prefix, region, persistency
    type(c_strings), target :: texts
    type(c_ptr) :: pointers(4)
    call texts%set([character(len=max(len_or_0(s3), len_or_0(prefix), len_or_0(region), len_or_0(persistency))) :: &
                    value_or_blank(s3), value_or_blank(prefix), value_or_blank(region), value_or_blank(persistency)])
    pointers = texts%pointers
    if (.not. present(s3)) pointers(1) = c_null_ptr
    if (.not. present(prefix)) pointers(2) = c_null_ptr
    if (.not. present(region)) pointers(3) = c_null_ptr
    if (.not. present(persistency)) pointers(4) = c_null_ptr
    rc = c_set_bucket_storage(g, c_str(bucket), pointers(1), pointers(2), pointers(3), pointers(4))
  end function

  pure integer function len_or_0(text)
    character(*), intent(in), optional :: text
    len_or_0 = 0
    if (present(text)) len_or_0 = len(text)
  end function

  pure function value_or_blank(text) result(value)
    character(*), intent(in), optional :: text
    character(:), allocatable :: value
    value = ''
    if (present(text)) value = text
  end function

  ! Fortran strings as NUL-terminated C strings, alive as long as this object.
  subroutine strings_set(self, texts)
    class(c_strings), intent(inout), target :: self
    character(*), intent(in) :: texts(:)
    integer :: i, j, at, n
    n = size(texts)
    allocate(self%chars(sum([(len_trim(texts(i)) + 1, i = 1, n)]) + 1), self%pointers(max(n, 1)))
    at = 1
    do i = 1, n
      self%pointers(i) = c_loc(self%chars(at))
      do j = 1, len_trim(texts(i))
        self%chars(at) = texts(i)(j:j)
        at = at + 1
      end do
      self%chars(at) = c_null_char
      at = at + 1
    end do
  end subroutine

  function geds_strerror(code) result(text)
    integer(c_int), intent(in) :: code
    character(:), allocatable :: text
    text = f_str(c_strerror(code))
  end function

  function geds_last_error() result(text)
    character(:), allocatable :: text
    text = f_str(c_last_error())
  end function

  function geds_version() result(text)
    character(:), allocatable :: text
    text = f_str(c_version())
  end function
end module geds
