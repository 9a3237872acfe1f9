-- depends: 0003.cancellation
--
-- Once the functions of the booking path; they now live in functions/, one file each,
-- applied after the migrations. Kept so that databases that applied it keep their history.
DO $$ BEGIN END $$;
