"""stargal: star/galaxy classification of SDSS imaging, from download to evaluated CNN."""

__version__ = "0.1.0"
