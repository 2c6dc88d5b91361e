! Each MPI rank writes an object, all wait at a barrier, then each reads its right neighbour's object and
! checks its bytes: the Fortran twin of mpi_exchange.c.   mpirun -np 4 ./mpi_exchange_f   (MDS: $GEDS_MDS)
program mpi_exchange_f
  use, intrinsic :: iso_c_binding
  use mpi
  use geds
  implicit none
  integer, parameter :: n = 65536
  integer(c_int32_t), allocatable, target :: mine(:), theirs(:)
  type(c_ptr) :: g, w, r
  integer :: rank, ranks, ierr, right, i, failures, total
  integer(c_int64_t) :: got
  character(len=32) :: key, other

  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Comm_size(MPI_COMM_WORLD, ranks, ierr)
  right = mod(rank + 1, ranks)
  allocate(mine(n), theirs(n))
  mine = [(int(rank * 1000003 + i, c_int32_t), i = 1, n)]
  theirs = 0

  call ok(geds_connect(g), 'geds_connect')
  call ok(geds_create_bucket(g, 'fortran-exchange'), 'geds_create_bucket')
  write(key, '(a,i0)') 'rank-', rank
  write(other, '(a,i0)') 'rank-', right
  call ok(geds_create(g, 'fortran-exchange', key, w), 'geds_create')
  call ok(geds_write(w, mine, int(n * 4, c_size_t), 0_c_int64_t), 'geds_write')
  call ok(geds_seal(w), 'geds_seal')
  call MPI_Barrier(MPI_COMM_WORLD, ierr)

  call ok(geds_open(g, 'fortran-exchange', other, r), 'geds_open')
  got = geds_read(r, theirs, int(n * 4, c_size_t), 0_c_int64_t)
  call geds_reader_close(r)
  failures = 0
  if (got /= n * 4) failures = 1
  do i = 1, n
    if (theirs(i) /= int(right * 1000003 + i, c_int32_t)) failures = 1
  end do
  call MPI_Barrier(MPI_COMM_WORLD, ierr)
  call ok(geds_delete(g, 'fortran-exchange', key), 'geds_delete')
  ! Allreduce, not Reduce: every rank decides its exit status from the total, so every rank needs it.
  call MPI_Allreduce(failures, total, 1, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr)
  if (rank == 0) then
    if (total == 0) then
      print '(a,i0,a)', 'mpi_exchange_f: ', ranks, ' ranks: OK'
    else
      print '(a,i0,a)', 'mpi_exchange_f: ', total, ' ranks read wrong bytes'
    end if
  end if
  call geds_close(g)
  call MPI_Finalize(ierr)
  if (total /= 0) stop 1

contains

  subroutine ok(rc, what)
    integer(c_int), intent(in) :: rc
    character(*), intent(in) :: what
    if (rc /= GEDS_OK) then
      print '(a,i0,5a)', 'rank ', rank, ': ', what, ' failed: ', geds_last_error(), ' (' // geds_strerror(rc) // ')'
      call MPI_Abort(MPI_COMM_WORLD, 1, ierr)
    end if
  end subroutine
end program
