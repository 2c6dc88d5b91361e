! Calls every function of the Fortran module geds with good and bad input against a real MDS and gedsd
! ($GEDS_MDS). Prints one line per failed check and "fortran_test: N failures"; exits 1 on any failure.
program fortran_test
  use, intrinsic :: iso_c_binding
  use geds
  implicit none
  integer, parameter :: n = 5000
  integer(c_int8_t), target :: bytes(n), back(n)
  integer(c_int8_t), pointer :: viewed(:)
  type(c_ptr) :: g, w, r, view, data
  type(geds_stat_t) :: info
  type(geds_entry) :: entry
  type(c_ptr) :: it
  integer(c_int) :: rc
  character(:), allocatable :: value
  integer :: listed
  integer(c_int64_t) :: size, deleted
  integer :: i, failures
  character(len=*), parameter :: bucket = 'fortran-test'

  failures = 0
  bytes = [(int(mod(i * 7, 127), c_int8_t), i = 1, n)]
  call check(index(geds_version(), 'GEDS') == 1, 'geds_version')
  call check(index(geds_version(), '(ABI 1)') > 0, 'the ABI version')
  call check(index(geds_strerror(GEDS_E_NO_SUCH_BUCKET), 'GEDS_E_NO_SUCH_BUCKET') == 1, 'geds_strerror')

  call check(geds_connect(g, mds='not an endpoint') == GEDS_E_INVALID_ARGUMENT, 'connect to a bad endpoint')
  call check(len(geds_last_error()) > 0, 'a message after a failure')
  call check(geds_connect(g, host_id='fortran-host', transport='tcp') == GEDS_OK, 'connect ($GEDS_MDS)')
  call check(geds_create_bucket(g, bucket) == GEDS_OK, 'create_bucket')
  call check(geds_create_bucket(g, 'Bad_Name') == GEDS_E_INVALID_NAME, 'create_bucket with a bad name')
  call check(index(geds_last_error(), 'Bad_Name') > 0, 'the message names the bucket')
  call check(geds_create(g, 'no-such-bucket-f', 'k', w) == GEDS_E_NO_SUCH_BUCKET, 'create in a missing bucket')

  ! Trailing blanks of Fortran strings are not part of names.
  call check(geds_create(g, bucket // '   ', 'dir/one   ', w) == GEDS_OK, 'create')
  call check(geds_write(w, bytes(n / 2 + 1:), int(n - n / 2, c_size_t), int(n / 2, c_int64_t)) == GEDS_OK, 'write 2nd half')
  call check(geds_write(w, bytes, int(n / 2, c_size_t), 0_c_int64_t) == GEDS_OK, 'write 1st half')
  call check(geds_write(w, bytes, 10_c_size_t, int(n, c_int64_t)) == GEDS_OK, 'write past the end')
  call check(geds_truncate(w, int(n, c_int64_t)) == GEDS_OK, 'truncate')
  call check(geds_writer_size(w, size) == GEDS_OK .and. size == n, 'writer_size')
  call check(geds_seal(w) == GEDS_OK, 'seal')
  call check(geds_seal(w) == GEDS_E_INVALID_ARGUMENT, 'seal twice')
  call check(geds_create(g, bucket, 'dir/meta', w) == GEDS_OK, 'create with metadata')
  call check(geds_write(w, bytes, 10_c_size_t, 0_c_int64_t) == GEDS_OK, 'write with metadata')
  call check(geds_seal_metadata(w, [character(5) :: 'kind', 'owner'], [character(7) :: 'test', 'fortran']) == GEDS_OK, &
             'seal_metadata')
  value = geds_metadata_get(g, bucket, 'dir/meta', 'owner', rc)
  call check(rc == GEDS_OK .and. value == 'fortran', 'metadata_get')
  value = geds_metadata_get(g, bucket, 'dir/meta', 'absent', rc)
  call check(rc == GEDS_E_INVALID_ARGUMENT, 'metadata_get of a missing name')
  call check(geds_metadata_set(g, bucket, 'dir/meta', ['colour'], ['blue  ']) == GEDS_OK, 'metadata_set')
  call check(geds_metadata_list(g, bucket, 'dir/meta', it) == GEDS_OK, 'metadata_list')
  call check(geds_next(it, entry) == 1, 'metadata entry')
  call check(entry%kind == GEDS_ENTRY_METADATA .and. entry%name == 'colour' .and. entry%detail == 'blue', 'metadata values')
  call check(geds_next(it, entry) == 0, 'one metadata entry')
  call geds_iter_close(it)
  call check(geds_list(g, bucket, 'dir/', '/', it) == GEDS_OK, 'list')
  listed = 0
  do while (geds_next(it, entry) == 1)
    listed = listed + 1
    call check(entry%kind == GEDS_ENTRY_OBJECT .and. entry%name(1:4) == 'dir/', 'listed ' // entry%name)
  end do
  call geds_iter_close(it)
  call check(listed == 2, 'two objects listed')
  call check(geds_list(g, 'no-such-bucket-f', '', '', it) == GEDS_E_NO_SUCH_BUCKET, 'list a missing bucket')
  call check(geds_list_buckets(g, it) == GEDS_OK, 'list_buckets')
  listed = 0
  do while (geds_next(it, entry) == 1)
    if (entry%name == bucket) listed = listed + 1
  end do
  call geds_iter_close(it)
  call check(listed == 1, 'the bucket is listed')
  call check(geds_locations(g, bucket, 'dir/meta', it) == GEDS_OK, 'locations')
  call check(geds_next(it, entry) == 1 .and. index(entry%detail, 'tier0') == 1, 'a tier-0 location')
  call geds_iter_close(it)
  call check(geds_delete(g, bucket, 'dir/meta') == GEDS_OK, 'delete with metadata')
  call check(geds_set_bucket_storage(g, bucket, s3='http://127.0.0.1:1/s3b', persistency='ephemeral') == GEDS_OK, &
             'set_bucket_storage')
  call check(geds_set_bucket_storage(g, bucket, s3='http://127.0.0.1:1/s3b', persistency='never') &
             == GEDS_E_INVALID_ARGUMENT, 'set_bucket_storage with a bad persistency')
  call check(geds_set_bucket_storage(g, bucket) == GEDS_OK, 'set_bucket_storage: taken away')

  call check(geds_create(g, bucket, 'discarded', w) == GEDS_OK, 'create to discard')
  call geds_writer_discard(w)
  call check(geds_stat(g, bucket, 'discarded', info) == GEDS_E_NO_SUCH_OBJECT, 'a discarded writer publishes nothing')

  call check(geds_stat(g, bucket, 'dir/one', info) == GEDS_OK .and. info%size == n, 'stat')
  call check(geds_open(g, bucket, 'dir/one', r) == GEDS_OK, 'open')
  call check(geds_reader_size(r, size) == GEDS_OK .and. size == n, 'reader_size')
  back = 0
  call check(geds_read(r, back, int(n, c_size_t), 0_c_int64_t) == n, 'read')
  call check(all(back == bytes), 'read bytes')
  call check(geds_read(r, back, 100_c_size_t, int(n, c_int64_t)) == 0, 'read at the end')
  call check(geds_view(r, view, data, size) == GEDS_OK .and. size == n, 'view')
  call c_f_pointer(data, viewed, [n])
  call check(all(viewed == bytes), 'view bytes')
  call geds_view_release(view)
  call geds_reader_close(r)
  call geds_reader_close(r)
  call check(geds_read(r, back, 1_c_size_t, 0_c_int64_t) == GEDS_E_INVALID_ARGUMENT, 'read a closed reader')

  back = 0
  call check(geds_read_object(g, bucket, 'dir/one', back, int(n, c_size_t), 0_c_int64_t) == n, 'read_object')
  call check(all(back == bytes), 'read_object bytes')
  call check(geds_put(g, bucket, 'put/one', bytes(2:), int(n - 1, c_size_t)) == GEDS_OK, 'put')
  back = 0
  call check(geds_read_object(g, bucket, 'put/one', back, int(n, c_size_t), 0_c_int64_t) == n - 1, 'read what put wrote')
  call check(all(back(:n - 1) == bytes(2:)), 'put bytes')
  call check(geds_put(g, 'no-such-bucket-here', 'k', bytes, 1_c_size_t) == GEDS_E_NO_SUCH_BUCKET, 'put to a missing bucket')
  call check(geds_delete(g, bucket, 'put/one') == GEDS_OK, 'delete what put wrote')
  call check(geds_copy(g, bucket, 'dir/one', bucket, 'dir/two') == GEDS_OK, 'copy')
  call check(geds_rename(g, bucket, 'dir/two', bucket, 'three') == GEDS_OK, 'rename')
  call check(geds_stat(g, bucket, 'dir/two', info) == GEDS_E_NO_SUCH_OBJECT, 'renamed away')
  call check(geds_relocate(g, bucket, 'three') == GEDS_OK, 'relocate to a gedsd')
  call check(geds_relocate(g, bucket, 'three', node='no-such-node') == GEDS_E_NO_SUCH_NODE, 'relocate to a missing node')
  call check(geds_flush(g, 10000_c_int64_t) == GEDS_OK, 'flush')
  call check(geds_delete(g, bucket, 'three') == GEDS_OK, 'delete')
  call check(geds_delete(g, bucket, 'three') == GEDS_E_NO_SUCH_OBJECT, 'delete twice')
  call check(geds_wait(g, bucket, 'three', 200_c_int64_t) == GEDS_E_TIMED_OUT, 'wait for a missing object times out')
  call check(geds_wait(g, bucket, 'dir/one', 1000_c_int64_t) == GEDS_OK, 'wait for an object that exists returns at once')
  call check(geds_delete_bucket(g, bucket, .false.) == GEDS_E_BUCKET_NOT_EMPTY, 'delete a bucket with objects')
  call check(geds_delete_prefix(g, bucket, 'dir/', deleted) == GEDS_OK .and. deleted == 1, 'delete_prefix')
  call check(geds_delete_bucket(g, bucket, .false.) == GEDS_OK, 'delete_bucket')
  call geds_close(g)
  call geds_close(g)

  print '(a,i0,a)', 'fortran_test: ', failures, ' failures'
  if (failures /= 0) stop 1

contains

  subroutine check(condition, what)
    logical, intent(in) :: condition
    character(*), intent(in) :: what
    if (.not. condition) then
      failures = failures + 1
      print '(4a)', 'FAIL ', what, ': ', geds_last_error()
    end if
  end subroutine
end program
