"""The REST api: start sagas and read them back."""
